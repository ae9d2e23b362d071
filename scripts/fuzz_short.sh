#!/usr/bin/env bash
# A short, fixed run of every libFuzzer target (tests/fuzz) on a scratch copy of its committed
# seed corpus and crash reproducers, so CI catches a new crash without the committed corpus
# changing. Usage: scripts/fuzz_short.sh BUILD_DIR [SECONDS_PER_TARGET=20] [PARALLEL=nproc].
# Needs a -DQLORA_FUZZ=ON build. Any crash, sanitizer report, leak or timeout (10 s per input)
# fails the script; the input is kept under BUILD_DIR/fuzz-artifacts/<target>/ and the log
# under BUILD_DIR/fuzz-logs/<target>.log. Prints each target's executions.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$(cd "${1:?usage: fuzz_short.sh BUILD_DIR [SECONDS] [PARALLEL]}" && pwd)"
seconds="${2:-20}"
parallel="${3:-$(nproc)}"
targets=$(sed -n 's/^  X(\([a-z0-9_]*\)).*/\1/p' "$root/tests/fuzz/fuzz_targets.h")
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$build/fuzz-artifacts" "$build/fuzz-logs"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

run_one() {
  local t="$1" bin="$build/tests/fuzz/fuzz_$1"
  [ -x "$bin" ] || { echo "fuzz_short: $bin is missing (configure with -DQLORA_FUZZ=ON)"; return 1; }
  mkdir -p "$work/$t" "$build/fuzz-artifacts/$t"
  cp -r "$root/tests/fuzz/corpus/$t/." "$work/$t/"
  [ -d "$root/tests/fuzz/regressions/$t" ] && cp -r "$root/tests/fuzz/regressions/$t/." "$work/$t/"
  local log="$build/fuzz-logs/$t.log"
  if "$bin" "$work/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
       -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/$t/" >"$log" 2>&1; then
    echo "fuzz $t: ok, $(sed -n 's/^stat::number_of_executed_units: *//p' "$log") executions in ${seconds}s"
  else
    echo "fuzz $t: FAILED (log $log, input in $build/fuzz-artifacts/$t/)"
    grep -E "ERROR|SUMMARY|terminate|Assertion|runtime error" "$log" | head -5
    return 1
  fi
}
export -f run_one
export build work seconds root
status=0
printf '%s\n' $targets | xargs -P "$parallel" -I{} bash -c 'run_one {}' || status=1
exit $status
