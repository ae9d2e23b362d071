#!/usr/bin/env bash
# bf16 GEMM throughput on the model's shapes in one run: our kernels (bench_gemm_bf16, best ISA of
# this CPU), oneDNN's matmul (bench_onednn_gemm, where libdnnl-dev is installed) and torch.matmul
# in bf16, at the same thread count; ratios ours / torch and ours / oneDNN for the forward (xwt)
# and the input gradient (dy_w).
# Usage: bench/gemm_vs_torch.sh [THREADS]    ($PYTHON: a Python with torch, default ./venv/bin/python)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
threads="${1:-$(nproc)}"
python="${PYTHON:-$root/venv/bin/python}"
out="$(mktemp)"; trap 'rm -f "$out"' EXIT
"$root/build/bench/bench_gemm_bf16" "$threads" | sed 's/^/ours /' >> "$out"
[ -x "$root/build/bench/bench_onednn_gemm" ] && "$root/build/bench/bench_onednn_gemm" "$threads" | sed 's/^/onednn /' >> "$out"
OMP_NUM_THREADS="$threads" "$python" "$root/bench/torch_matmul.py" --threads "$threads" | sed 's/^/torch /' >> "$out"
python3 - "$out" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    who, js = line.split(" ", 1)
    r = json.loads(js)
    key = (r["op"], r["N"], r["O"], r["K"])
    if who == "ours" and r["isa"] in ("f32", "avx2"):
        continue  # the fallbacks; the table compares the best ISA
    best = rows.setdefault(key, {}).get(who)
    if best is None or r["gflops"] > best["gflops"]:  # ours: the fastest ISA (AMX over AVX512-BF16)
        rows[key][who] = r
print(f"{'op':<14} {'N x O x K':<18} {'ours GF/s':>10} {'oneDNN':>8} {'torch':>8} {'ours/torch':>11} {'ours/oneDNN':>12}")
for (op, n, o, k), r in rows.items():
    if op not in ("xwt", "dy_w"):
        continue
    ours, one, tor = r.get("ours"), r.get("onednn"), r.get("torch")
    f = lambda x: f"{x['gflops']:>8.0f}" if x else f"{'-':>8}"
    ratio = lambda a, b: f"{a['gflops'] / b['gflops']:>10.2f}x" if a and b else f"{'-':>11}"
    print(f"{op:<14} {f'{n}x{o}x{k}':<18} {ours['gflops'] if ours else 0:>10.0f} {f(one)} {f(tor)} {ratio(ours, tor)} {ratio(ours, one):>12}")
for (op, n, o, k), r in rows.items():
    if op == "xwt_prepacked" and "onednn" in r:
        print(f"oneDNN prepacked xwt {n}x{o}x{k}: {r['onednn']['gflops']:.0f} GF/s ({r['onednn']['isa']})")
PY
