#!/usr/bin/env bash
# The test command: installs dependencies, fetches the default real model, builds (CPU), runs
# every test with ctest, compiles the CUDA backend (no GPU needed to compile it), then builds
# everything again with clang under ASan+UBSan and runs the whole suite and each fuzzer briefly.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/install_deps.sh
bash scripts/fetch_models.sh
bash scripts/build.sh
# Every module links against only its declared dependencies (src/CMakeLists.txt); fails loudly.
cmake --build build -j"$(nproc)" --target module_link_checks
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="$PATH:/usr/local/cuda/bin"
  cmake -S . -B build-cuda -DQLORA_CUDA=ON -DQLORA_BUILD_TESTS=OFF -DQLORA_BUILD_BENCH=OFF >/dev/null
  cmake --build build-cuda -j"$(nproc)" --target qlora_backend_cuda
  echo "CUDA backend compiled"
fi
ctest --test-dir build --output-on-failure -j"$(nproc)"
bash scripts/test_clang.sh
