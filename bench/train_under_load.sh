#!/usr/bin/env bash
# Training throughput beside K busy processes (one `yes > /dev/null` per process; K = nproc by
# default, one per core, so a fair share is half the machine), for qlora.cpp and for transformers +
# PEFT on torch CPU, in one run: each quiet first, then loaded, and the loaded/quiet ratio.
# Usage: bench/train_under_load.sh [K] [METHOD] [DTYPE] [SEQ] [STEPS] [MODEL]
# Needs build/bench/bench_train; the torch rows need a Python with torch, transformers, peft,
# bitsandbytes, gguf ($PYTHON, default ./venv/bin/python); they are skipped without one.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
busy="${1:-$(nproc)}"; method="${2:-qlora}"; dtype="${3:-bf16}"; seq="${4:-256}"; steps="${5:-3}"
model="${6:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
threads="$(nproc)"
python="${PYTHON:-$root/venv/bin/python}"
bench="${BENCH_TRAIN:-$root/build/bench/bench_train}"
args=(--method "$method" --dtype "$dtype" --seq "$seq" --steps "$steps" --threads "$threads")
pids=()
stop_load() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; pids=(); }
trap stop_load EXIT
start_load() { for _ in $(seq "$busy"); do yes > /dev/null & pids+=($!); done; sleep 1; }
ours() { "$bench" "$model" "${args[@]}" | tail -1; }
torch() { OMP_NUM_THREADS="$threads" "$python" "$root/bench/torch_train.py" --model "$model" "${args[@]}" 2>/dev/null | tail -1; }
have_torch=0
[ -x "$python" ] && "$python" -c "import torch, peft, transformers" 2>/dev/null && have_torch=1
rows=()
rows+=("ours quiet" "$(ours)")
[ "$have_torch" = 1 ] && rows+=("torch quiet" "$(torch)")
start_load
rows+=("ours loaded" "$(ours)")
[ "$have_torch" = 1 ] && rows+=("torch loaded" "$(torch)")
stop_load
python3 - "$busy" "$method" "$dtype" "${rows[@]}" <<'PY'
import json, sys
busy, method, dtype, rest = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
runs = {rest[i]: json.loads(rest[i + 1]) for i in range(0, len(rest), 2)}
print(f"{method} {dtype}, beside {busy} busy processes (tokens/s)")
print(f"{'impl':<10} {'quiet':>8} {'loaded':>8} {'loaded/quiet':>13}")
for impl in ("ours", "torch"):
    q, l = runs.get(f"{impl} quiet"), runs.get(f"{impl} loaded")
    if q and l:
        print(f"{impl:<10} {q['tokens_per_s']:>8.1f} {l['tokens_per_s']:>8.1f} {l['tokens_per_s'] / q['tokens_per_s']:>12.0%}")
PY
