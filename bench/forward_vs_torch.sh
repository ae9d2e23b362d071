#!/usr/bin/env bash
# Forward-pass tokens/s of qlora.cpp beside transformers on torch CPU: same model, same threads,
# same sequence lengths, one run. Prints both JSON lines and the ratios (ours / torch).
# Usage: bench/forward_vs_torch.sh [MODEL] [SEQ] [DECODE] [THREADS] [DTYPE]
# Needs build/bench_forward (scripts/build.sh) and a Python with torch + transformers + gguf
# ($PYTHON, default ./venv/bin/python or python3).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
model="${1:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
seq="${2:-128}"; decode="${3:-32}"; threads="${4:-$(nproc)}"; dtype="${5:-f32}"
python="${PYTHON:-$( [ -x "$root/venv/bin/python" ] && echo "$root/venv/bin/python" || echo python3)}"
ours=$("$root/build/bench/bench_forward" "$model" "$seq" "$decode" "$threads" 3 "$dtype")
theirs=$(OMP_NUM_THREADS="$threads" "$python" "$root/bench/torch_forward.py" "$model" "$seq" "$decode" "$threads" 3 "$dtype" 2>/dev/null | tail -1)
echo "$ours"
echo "$theirs"
python3 - "$ours" "$theirs" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for k in ("prefill_tokens_per_s", "decode_tokens_per_s"):
    print(f"{k}: qlora.cpp {a[k]:.1f}  torch {b[k]:.1f}  ratio {a[k] / b[k]:.2f}x")
PY
