#!/usr/bin/env bash
# Configures and builds qlora.cpp into build/ (extra arguments go to cmake's configure step).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$root/build" -j"$(nproc)"
