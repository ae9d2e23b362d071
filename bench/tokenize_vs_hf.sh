#!/usr/bin/env bash
# Tokenizer throughput (MB/s) of qlora.cpp beside Hugging Face tokenizers on the same text and
# tokenizer, one thread each. Prints both JSON lines, whether the token counts agree, and the ratio.
# Usage: bench/tokenize_vs_hf.sh [TOKENIZER] [TEXT_FILE] [REPEATS]
# Needs build/bench/bench_tokenize (cmake --build build --target bench_tokenize) and a Python with
# tokenizers (+ transformers and gguf for a .gguf tokenizer): $PYTHON, default ./venv/bin/python.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tokenizer="${1:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
text="${2:-$root/../shared/data/gsm8k/train.jsonl}"
repeats="${3:-3}"
python="${PYTHON:-$( [ -x "$root/venv/bin/python" ] && echo "$root/venv/bin/python" || echo python3)}"
bench="${BENCH_TOKENIZE:-$root/build/bench/bench_tokenize}"
ours=$("$bench" "$tokenizer" "$text" "$repeats")
theirs=$(RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false "$python" "$root/bench/hf_tokenize.py" "$tokenizer" "$text" "$repeats" 2>/dev/null | tail -1)
echo "$ours"
echo "$theirs"
python3 - "$ours" "$theirs" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
same = "same" if a["tokens"] == b["tokens"] else f"DIFFERENT ({a['tokens']} vs {b['tokens']})"
print(f"tokens: {same}")
print(f"MB/s: qlora.cpp {a['mb_per_s']:.2f}  hf-tokenizers {b['mb_per_s']:.2f}  ratio {a['mb_per_s'] / b['mb_per_s']:.2f}x")
PY
