#!/usr/bin/env bash
# Data-parallel scaling on one machine: the README's QLoRA job (examples/qlora-smollm2-gsm8k.yaml)
# as 1 process × 2 threads accumulating 2 micro-batches against 2 MPI ranks × 1 thread with 1
# each (the same global batch, the same update), training tokens/s and the time in all-reduces
# from metrics.jsonl (medians of the steps after the first), and the all-reduce bandwidth on
# loopback and between two network namespaces over TCP (bench_allreduce, tests/dist/two_hosts.sh).
# Usage: bench/dp_scaling.sh [STEPS]    Needs build/qlora, build/bench/bench_allreduce, mpirun.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
steps="${1:-8}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
common=(--max_steps "$steps" --eval_steps 0 --save_steps 0 --val_set_size 0 --sample_prompts '[]' --quiet)
median_of() {  # FILE KEY: the median of KEY over the training lines after the first
  python3 - "$1/metrics.jsonl" "$2" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
print(f"{statistics.median(r[sys.argv[2]] for r in rows[1:]):.3f}")
PY
}
"$root/build/qlora" train "$root/examples/qlora-smollm2-gsm8k.yaml" "${common[@]}" --threads 2 \
  --gradient_accumulation_steps 2 --output_dir "$out/one" >/dev/null
mpirun -np 2 --oversubscribe "$root/build/qlora" train "$root/examples/qlora-smollm2-gsm8k.yaml" "${common[@]}" \
  --threads 1 --gradient_accumulation_steps 1 --output_dir "$out/two" --distributed >/dev/null
one=$(median_of "$out/one" tokens_per_s); two=$(median_of "$out/two" tokens_per_s)
echo "1 process x 2 threads (accumulation 2): $one tokens/s"
echo "2 ranks x 1 thread (accumulation 1):    $two tokens/s  ($(python3 -c "print(f'{$two / $one:.2f}')")x)"
echo "  of a step, in all-reduces (and waiting for the other rank): $(median_of "$out/two" comm_s) s"
echo "all-reduce on loopback (shared memory):"
mpirun -np 2 --oversubscribe "$root/build/bench/bench_allreduce"
echo "all-reduce between two network namespaces (TCP over a veth pair; needs root):"
bash "$root/tests/dist/two_hosts.sh" "$root/build/bench/bench_allreduce" || true
