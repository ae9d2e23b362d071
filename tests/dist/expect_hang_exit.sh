#!/usr/bin/env bash
# ctest's DistTrainer.AHungRankEndsTheJob: runs dist_trainer's DistHang test as 2 ranks with a 2 s
# collective timeout. Passes when the job ends non-zero within 30 s and rank 0 said why.
# Usage: expect_hang_exit.sh MPIEXEC DIST_TRAINER
set -uo pipefail
start=$(date +%s)
out=$(QLORA_DIST_TIMEOUT_S=2 timeout 60 "$1" -n 2 --oversubscribe "$2" --gtest_filter='DistHang.*' 2>&1)
rc=$?
elapsed=$(( $(date +%s) - start ))
echo "$out"
echo "exit code $rc after ${elapsed} s"
# (`timeout` would stop a job that hangs anyway at 60 s: the 30 s bound tells the two apart.)
[ "$rc" -ne 0 ] && [ "$elapsed" -lt 30 ] && grep -q "has waited .* for the other ranks" <<<"$out"
