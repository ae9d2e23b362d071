#!/usr/bin/env bash
# 4-bit quantize/dequantize throughput of qlora.cpp beside bitsandbytes (CPU backend): same matrix
# size, block 64, threads; prints both JSON lines per case and the ratios (ours / bitsandbytes).
# Usage: bench/quantize_vs_bnb.sh [N] [K] [THREADS]; needs build/bench/bench_quantize and a Python
# with torch + bitsandbytes ($PYTHON, default ./venv/bin/python or python3).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-4096}"; k="${2:-4096}"; threads="${3:-$(nproc)}"
python="${PYTHON:-$( [ -x "$root/venv/bin/python" ] && echo "$root/venv/bin/python" || echo python3)}"
ours=$("$root/build/bench/bench_quantize" "$n" "$k" "$threads")
theirs=$(OMP_NUM_THREADS="$threads" "$python" "$root/bench/bnb_quantize.py" "$n" "$k" "$threads" 2>/dev/null)
echo "$ours"
echo "$theirs"
python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours = [json.loads(l) for l in sys.argv[1].splitlines()]
theirs = {(d["type"], d["double_quant"]): d for d in map(json.loads, sys.argv[2].splitlines())}
for a in ours:
    b = theirs[(a["type"], a["double_quant"])]
    name = a["type"] + (" +dq" if a["double_quant"] else "")
    for key in ("quantize_gb_per_s", "dequantize_gb_per_s"):
        print(f"{name:8s} {key}: qlora.cpp {a[key]:.2f}  bitsandbytes {b[key]:.2f}  ratio {a[key] / b[key]:.2f}x")
PY
