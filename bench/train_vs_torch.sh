#!/usr/bin/env bash
# Training tokens/s and peak memory of qlora.cpp beside transformers + PEFT on torch CPU: same
# model, same random batches (seq x batch), LoRA rank/alpha on all 7 projections, AdamW lr 1e-4,
# clipping at 1.0, same threads; one process per run so each peak RSS is its own.
# For QLoRA torch runs twice: with bitsandbytes' 4-bit layers (what users run) and with the NF4
# round trip held dense (same math, torch's dense kernels).
# Usage: [DTYPE=f32|bf16] bench/train_vs_torch.sh [MODEL] [SEQ] [BATCH] [STEPS] [THREADS] [METHODS...]
# Needs build/bench/bench_train and a Python with torch, transformers, peft, bitsandbytes, gguf
# ($PYTHON, default ./venv/bin/python or python3).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
model="${1:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
seq="${2:-256}"; batch="${3:-1}"; steps="${4:-3}"; threads="${5:-$(nproc)}"
shift $(( $# < 5 ? $# : 5 ))
methods=("${@:-qlora lora full}")
read -r -a methods <<< "${methods[*]}"
python="${PYTHON:-$( [ -x "$root/venv/bin/python" ] && echo "$root/venv/bin/python" || echo python3)}"
bench="${BENCH_TRAIN:-$root/build/bench/bench_train}"
# DTYPE=bf16 runs both in bf16 (ours: bf16 compute; torch: the model in bfloat16, PEFT's adapters f32).
common=(--seq "$seq" --batch "$batch" --steps "$steps" --threads "$threads" --dtype "${DTYPE:-f32}")
lines=()
for m in "${methods[@]}"; do
  ours=$("$bench" "$model" --method "$m" "${common[@]}")
  echo "$ours"
  theirs=$(OMP_NUM_THREADS="$threads" "$python" "$root/bench/torch_train.py" --model "$model" --method "$m" "${common[@]}" 2>/dev/null | tail -1)
  echo "$theirs"
  lines+=("$ours" "$theirs")
  if [ "$m" = qlora ]; then
    dense=$(OMP_NUM_THREADS="$threads" "$python" "$root/bench/torch_train.py" --model "$model" --method qlora --qlora-base roundtrip "${common[@]}" 2>/dev/null | tail -1)
    echo "$dense"
    lines+=("$ours" "$dense")
  fi
done
python3 - "${lines[@]}" <<'PY'
import json, sys
rows = [json.loads(x) for x in sys.argv[1:]]
print(f"{'method':<22} {'qlora.cpp tok/s':>15} {'torch tok/s':>12} {'ratio':>7} {'our peak MB':>12} {'torch peak MB':>14}")
for a, b in zip(rows[::2], rows[1::2]):
    base = b.get("qlora_base") or ""
    name = b["method"] + (" (bnb 4-bit)" if "Linear4bit" in base else " (NF4 dense)" if base else "")
    print(f"{name:<22} {a['tokens_per_s']:>15.1f} {b['tokens_per_s']:>12.1f} {a['tokens_per_s'] / b['tokens_per_s']:>6.2f}x "
          f"{a['peak_rss_mb']:>12.0f} {b['peak_rss_mb']:>14.0f}")
PY
