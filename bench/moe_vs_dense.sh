#!/usr/bin/env bash
# MoE training throughput: a small Mixtral (8 experts, 2 per token) against the dense Llama with
# the same active parameters per token (bench/make_moe_bench_models.py), each with LoRA on
# attention, beside transformers + PEFT on the same folders; and qlora.cpp's grouped experts (each
# expert's GEMMs once over the rows routed to it) against per-token dispatch (one GEMM per
# token and expert). One process per run; tokens/s as bench/train_vs_torch.sh measures them.
# Usage: [DTYPE=f32|bf16] bench/moe_vs_dense.sh [SEQ] [BATCH] [STEPS] [THREADS]
# Needs build/bench/bench_train and a Python with torch, transformers and peft ($PYTHON, default
# ./venv/bin/python).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seq="${1:-256}"; batch="${2:-2}"; steps="${3:-5}"; threads="${4:-$(nproc)}"
python="${PYTHON:-$( [ -x "$root/venv/bin/python" ] && echo "$root/venv/bin/python" || echo python3)}"
bench="${BENCH_TRAIN:-$root/build/bench/bench_train}"
models="$(mktemp -d)"
trap 'rm -rf "$models"' EXIT
"$python" "$root/bench/make_moe_bench_models.py" "$models" 2>/dev/null | grep parameters
targets=q_proj,k_proj,v_proj,o_proj
common=(--method lora --targets "$targets" --seq "$seq" --batch "$batch" --steps "$steps" --threads "$threads"
        --dtype "${DTYPE:-f32}")
run_ours() { "$bench" "$models/$1" "${common[@]}" --moe-dispatch "$2"; }
run_torch() { OMP_NUM_THREADS="$threads" "$python" "$root/bench/torch_train.py" --model "$models/$1" "${common[@]}" 2>/dev/null | tail -1; }
rows=("$(run_ours dense grouped)" "$(run_torch dense)" "$(run_ours mixtral grouped)" "$(run_ours mixtral per-token)"
      "$(run_torch mixtral)")
printf '%s\n' "${rows[@]}"
python3 - "${rows[@]}" <<'PY'
import json, sys
dense, dense_torch, moe, moe_per_token, moe_torch = (json.loads(x)["tokens_per_s"] for x in sys.argv[1:])
print(f"{'model':<34} {'qlora.cpp tok/s':>15} {'torch tok/s':>12} {'ours/torch':>10}")
print(f"{'dense (same active params)':<34} {dense:>15.0f} {dense_torch:>12.0f} {dense / dense_torch:>10.2f}")
print(f"{'mixtral, grouped experts':<34} {moe:>15.0f} {moe_torch:>12.0f} {moe / moe_torch:>10.2f}")
print(f"{'mixtral, per-token dispatch':<34} {moe_per_token:>15.0f} {'':>12} {moe_per_token / moe_torch:>10.2f}")
print(f"grouped / per-token: {moe / moe_per_token:.2f}x; mixtral / dense: ours {moe / dense:.2f}, torch {moe_torch / dense_torch:.2f}")
PY
