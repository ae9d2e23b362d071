#!/usr/bin/env bash
# Long fuzzing of every target (tests/fuzz): 10 million executions or one hour each, whichever
# comes first, growing a working corpus that starts from the committed seeds and reproducers.
# Not run in CI (scripts/fuzz_short.sh runs each target for seconds there); run it on a spare
# machine and commit any crash's input to tests/fuzz/regressions/<target>/ with its fix.
# Usage: bench/fuzz_long.sh [BUILD_DIR=build-fuzz] [TARGET ...]
# Builds BUILD_DIR with clang-14 and -DQLORA_FUZZ=ON first. Environment: FUZZ_RUNS (10000000),
# FUZZ_SECONDS (3600), FUZZ_JOBS (1: sequential), FUZZ_WORK (BUILD_DIR/fuzz-long).
set -euo pipefail
shopt -s nullglob
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build-fuzz}"
shift || true
mkdir -p "$build" && build="$(cd "$build" && pwd)"  # absolute: the fuzzers run from their log folders
runs="${FUZZ_RUNS:-10000000}"
seconds="${FUZZ_SECONDS:-3600}"
jobs="${FUZZ_JOBS:-1}"
work="${FUZZ_WORK:-$build/fuzz-long}"
CC=clang-14 CXX=clang++-14 cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DQLORA_FUZZ=ON \
  -DQLORA_BUILD_BENCH=OFF >/dev/null
# One build at a time per folder: two concurrent builds append to the same archives twice.
flock "$build/.fuzz-build.lock" cmake --build "$build" -j"$(nproc)" --target fuzzers >/dev/null
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(sed -n 's/^  X(\([a-z0-9_]*\)).*/\1/p' "$root/tests/fuzz/fuzz_targets.h")
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
status=0
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "$work/artifacts/$t"
  cp -rn "$root/tests/fuzz/corpus/$t/." "$work/$t/"
  [ -d "$root/tests/fuzz/regressions/$t" ] && cp -rn "$root/tests/fuzz/regressions/$t/." "$work/$t/"
  log="$work/$t.log"
  # -jobs forks workers that log to fuzz-<job>.log in the current folder: run them in the target's
  # own log folder, and sum their counts. One job runs in-process, its stats in $log.
  parallel=()
  [ "$jobs" -gt 1 ] && parallel=(-jobs="$jobs" -workers="$jobs")
  mkdir -p "$work/logs-$t"
  if (cd "$work/logs-$t" && "$build/tests/fuzz/fuzz_$t" "$work/$t" -runs="$runs" -max_total_time="$seconds" \
       "${parallel[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
       -artifact_prefix="$work/artifacts/$t/" >"$log" 2>&1); then
    logs=("$log" "$work/logs-$t"/fuzz-*.log)  # nullglob: no worker logs with one job
    executions=$(cat "${logs[@]}" | sed -n 's/^stat::number_of_executed_units: *//p' | awk '{s += $1} END {print s + 0}')
    seconds_run=$(cat "${logs[@]}" | sed -n 's/.*Done [0-9]* runs in \([0-9]*\) second.*/\1/p' | sort -n | tail -1)
    echo "$t: $executions executions in ${seconds_run:-?} s, corpus $(ls "$work/$t" | wc -l) inputs, no crash"
  else
    echo "$t: CRASH, see $log and $work/artifacts/$t/"
    status=1
  fi
done
exit $status
