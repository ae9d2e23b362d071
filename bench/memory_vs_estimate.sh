#!/usr/bin/env bash
# Measured vs predicted memory on a small real model (docs/memory.md, "Measured vs predicted"): for
# each configuration, bench_train's peak resident set after two steps (one warm-up, one timed, so
# the optimizer state exists while the second step's activations are alive) beside
# `qlora estimate --json` for the same file and settings. Prints two markdown tables in MiB: the
# peaks, then the engine's own category figures beside the estimate's.
#
#   bench/memory_vs_estimate.sh [MODEL]     (default models/SmolLM2-135M-Instruct.Q4_1.gguf)
# Environment: BUILD (default build).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MODEL=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
[[ -x "$BUILD/qlora" && -x "$BUILD/bench/bench_train" ]] || { echo "build first (qlora and bench/bench_train)" >&2; exit 1; }
[[ -f "$MODEL" ]] || { echo "no model at $MODEL (scripts/fetch_models.sh fetches it)" >&2; exit 1; }

# method seq batch checkpointing(0|1) dtype
configs=(
  "qlora 128 1 0 f32" "qlora 256 2 0 f32" "qlora 256 2 1 f32" "qlora 512 2 0 f32"
  "lora 128 1 0 f32" "lora 256 2 0 f32" "lora 256 2 1 f32"
  "full 128 1 0 f32" "full 256 2 1 f32"
  "lora 256 2 0 bf16" "full 128 1 0 bf16" "qlora 128 1 0 bf16"
)
categories=$(mktemp)
trap 'rm -f "$categories"' EXIT
echo "| method | dtype | seq | batch | ckpt | measured peak RSS | predicted total | training sum | load peak + overhead | error |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for c in "${configs[@]}"; do
  read -r method seq batch ckpt dtype <<< "$c"
  flags=(--method "$method" --seq "$seq" --batch "$batch" --dtype "$dtype" --rank 8)
  [[ $ckpt == 1 ]] && flags+=(--checkpointing)
  measured=$("$BUILD/bench/bench_train" "$MODEL" --steps 1 --warmup 1 "${flags[@]}")
  eflags=(--method "$method" --seq "$seq" --batch "$batch" --dtype "$dtype" --rank 8)
  [[ $ckpt == 1 ]] && eflags+=(--checkpointing)
  estimate=$("$BUILD/qlora" estimate "$MODEL" "${eflags[@]}" --json)
  python3 - "$measured" "$estimate" "$method" "$dtype" "$seq" "$batch" "$ckpt" "$categories" <<'PY'
import json, sys
m, e = json.loads(sys.argv[1]), json.loads(sys.argv[2])
method, dtype, seq, batch, ckpt, categories = sys.argv[3:]
mib = lambda b: b / 2**20
peak = m["peak_rss_mb"]
total = mib(e["total"])
training = mib(sum(e[k] for k in ("weights", "gradients", "optimizer", "adapters", "quant_constants",
                                   "activations", "overhead")))
load = mib(e["load_peak"] + e["overhead"])
print(f"| {method} | {dtype} | {seq} | {batch} | {'yes' if ckpt == '1' else 'no'} | {peak:.1f} | {total:.1f} | "
      f"{training:.1f} | {load:.1f} | {100 * (total - peak) / peak:+.1f}% |")
with open(categories, "a") as f:
    f.write(f"| {method} | {dtype} | {seq} | {batch} | {'yes' if ckpt == '1' else 'no'} | "
            f"{m['activations_peak_mb']:.2f} | {mib(e['activations_engine']):.2f} | {m['weights_mb']:.2f} | "
            f"{mib(e['weights'] + e['quant_constants']):.2f} | {m['optimizer_mb']:.2f} | {mib(e['optimizer']):.2f} |\n")
PY
done
echo
echo "| method | dtype | seq | batch | ckpt | engine activations_peak | estimate activations_engine | engine weights | estimate weights+constants | engine optimizer | estimate optimizer |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
cat "$categories"
