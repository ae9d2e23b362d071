#!/usr/bin/env bash
# The clang half of the test command (scripts/test.sh calls it): builds the libraries, the CLI,
# every test and every fuzzer with clang-14 under AddressSanitizer + UndefinedBehaviorSanitizer
# (-DQLORA_FUZZ=ON) into build-clang/, then
#   1. runs the whole test suite under the sanitizers: any report aborts its test and fails the run;
#   2. runs each libFuzzer target for FUZZ_SECONDS (default 20) on its committed corpus
#      (scripts/fuzz_short.sh): a crash, leak, sanitizer report or hang fails the run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build-clang"
# -O1 keeps the sanitized build and its tests quick; line tables make the reports name lines.
CC=clang-14 CXX=clang++-14 cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_FLAGS_RELEASE="-O1 -gline-tables-only -DNDEBUG" -DQLORA_FUZZ=ON -DQLORA_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j"$(nproc)"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
ctest --test-dir "$build" --output-on-failure -j"$(nproc)"
bash "$root/scripts/fuzz_short.sh" "$build" "${FUZZ_SECONDS:-20}"
