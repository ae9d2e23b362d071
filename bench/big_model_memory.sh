#!/usr/bin/env bash
# Real-size memory benchmark (docs/memory.md, "Real-size models"). For each shape it writes a Hugging
# Face folder with random bf16 weights in sharded safetensors with an index (bench/make_random_model;
# the weights are not committed), then runs `qlora train` QLoRA as bench/big_model_qlora.yaml says
# (r=16 on all 7 projections, seq 512, micro-batch 1, checkpointing, 2 steps) and reports load time,
# peak RSS, the estimate and tokens/s. For the 1.1B shape it also runs LoRA over the bf16 base and
# a run whose micro-batch and checkpointing --memory-budget chooses; for the 7B shape it merges the
# trained adapter (`qlora merge --dtype bf16`) and exports a GGUF (`qlora export --format gguf`),
# measuring each one's peak RSS. Figures are printed as a markdown table (and saved beside the runs).
#
#   bench/big_model_memory.sh [SHAPE ...]     SHAPE: tinyllama-1.1b llama2-7b llama2-13b (default:
#                                             all three; 13B only when the disk has room)
# Environment: BUILD (default build), WORK (default /tmp/qlora-big: models and runs, ~45 GB for all
# three), TOKENIZER (default ../shared/models/llama2-tokenizer), KEEP=1 keeps the generated models,
# STEPS (default 2) the training steps per run: the peak is reached in the first step (its
# optimizer update allocates the state while the step's activations are alive).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
WORK=${WORK:-/tmp/qlora-big}
TOKENIZER=${TOKENIZER:-../shared/models/llama2-tokenizer}
STEPS=${STEPS:-2}
QLORA="$BUILD/qlora"
GEN="$BUILD/bench/make_random_model"
[[ -x "$QLORA" && -x "$GEN" ]] || { echo "build first: cmake --build $BUILD (needs qlora and bench/make_random_model)" >&2; exit 1; }
[[ -e "$TOKENIZER" ]] || { echo "no tokenizer at $TOKENIZER (set TOKENIZER)" >&2; exit 1; }
shapes=("$@")
[[ ${#shapes[@]} -gt 0 ]] || shapes=(tinyllama-1.1b llama2-7b llama2-13b)
mkdir -p "$WORK"
results="$WORK/results.md"
: > "$results"

gib() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 2**30:.2f}')" "$1"; }
free_gb() { df -Pk "$WORK" | awk 'NR==2 {print int($4 / 1e6)}'; }
need_gb() { case "$1" in tinyllama-1.1b) echo 3;; llama2-7b) echo 30;; llama2-13b) echo 28;; esac; }

# The peak RSS (bytes) of a command, from GNU time's "Maximum resident set size" (KiB).
peak_of() {
  local log=$1; shift
  /usr/bin/time -v "$@" > "$log" 2>&1 || { tail -20 "$log" >&2; return 1; }
  awk -F': ' '/Maximum resident set size/ {print $2 * 1024}' "$log"
}

row() { echo "$1" | tee -a "$results"; }
row "| shape | run | steps | load s | peak RSS GiB | estimate GiB | error | tokens/s | note |"
row "|---|---|---|---|---|---|---|---|---|"

# One qlora train run: prints its table row. Extra arguments are config overrides.
train_run() {
  local shape=$1 label=$2 model=$3 out=$4; shift 4
  rm -rf "$out"
  "$QLORA" train bench/big_model_qlora.yaml --base_model "$model" --tokenizer "$TOKENIZER" --output_dir "$out" \
    --max_steps "$STEPS" --quiet "$@" > "$out.log" 2>&1 || { tail -20 "$out.log" >&2; return 1; }
  python3 - "$shape" "$label" "$out" "$*" <<'EOF' | tee -a "$results"
import json, sys
shape, label, out, args = sys.argv[1:]
s = json.load(open(f"{out}/summary.json"))
steps = [json.loads(l) for l in open(f"{out}/metrics.jsonl") if '"loss"' in l]
tps = sum(r["tokens_per_s"] for r in steps) / max(1, len(steps))
peak, est = s["peak_rss_bytes"], s["estimated_bytes"]["total"]
print(f"| {shape} | {label} | {len(steps)} | {s['load_seconds']:.1f} | {peak / 2**30:.2f} | {est / 2**30:.2f} | "
      f"{100 * (est - peak) / peak:+.1f}% | {tps:.2f} | {args} |")
EOF
}

for shape in "${shapes[@]}"; do
  model="$WORK/$shape"
  if [[ ! -f "$model/model.safetensors.index.json" ]]; then
    if (( $(free_gb) < $(need_gb "$shape") )); then
      row "| $shape | skipped | | | | | | | $(free_gb) GB free, needs ~$(need_gb "$shape") GB |"
      continue
    fi
    "$GEN" "$model" --shape "$shape" --dtype bf16 >&2
  fi
  train_run "$shape" "qlora" "$model" "$WORK/run-$shape"
  if [[ $shape == tinyllama-1.1b ]]; then
    train_run "$shape" "lora (bf16 base)" "$model" "$WORK/run-$shape-lora" --method lora
    # The budget chooses micro-batch and checkpointing for a run configured at micro-batch 4.
    train_run "$shape" "qlora, memory_budget 1.5GiB" "$model" "$WORK/run-$shape-budget" \
      --micro_batch_size 4 --gradient_checkpointing false --memory-budget 1.5GiB
    grep -h "memory_budget" "$WORK/run-$shape-budget.log" >&2 || true
  fi
  if [[ $shape == llama2-7b ]]; then
    # Merge and export stream: each holds one source tensor and its written copy at a time. The
    # largest tensor is the 32000 x 4096 embedding: 0.49 GiB in f32, 0.24 GiB in bf16/f16.
    peak=$(peak_of "$WORK/merge.log" "$QLORA" merge "$model" --adapter "$WORK/run-$shape/adapter" --dtype bf16 \
      -o "$WORK/merged-$shape")
    row "| $shape | merge --dtype bf16 | | | $(gib "$peak") | | | | output $(du -sh "$WORK/merged-$shape" | cut -f1) |"
    rm -rf "$WORK/merged-$shape"
    peak=$(peak_of "$WORK/export.log" "$QLORA" export "$model" --adapter "$WORK/run-$shape/adapter" --format gguf \
      --type f16 -o "$WORK/merged-$shape.gguf")
    row "| $shape | export --format gguf f16 | | | $(gib "$peak") | | | | output $(du -sh "$WORK/merged-$shape.gguf" | cut -f1) |"
    rm -f "$WORK/merged-$shape.gguf"
  fi
  [[ ${KEEP:-0} == 1 ]] || rm -rf "$model"
done
echo "results: $results" >&2
