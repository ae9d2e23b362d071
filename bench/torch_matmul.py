#!/usr/bin/env python3
"""torch.matmul in bf16 on the shapes of bench_gemm_bf16: y = x @ W.T (x (N, K), W (O, K)) and
dx = dy @ W, what torch CPU runs for a bf16 linear's forward and input gradient (oneDNN inside).
One JSON line per (op, shape), GFLOP/s = 2·N·O·K / best time (after a warm-up, repeats >= 0.3 s).
    python bench/torch_matmul.py [--threads N]"""
import argparse
import json
import os
import time

import torch

SHAPES = [(256, 576, 576), (256, 192, 576), (256, 1536, 576), (256, 576, 1536),
          (1024, 2048, 2048), (256, 4096, 4096), (256, 11008, 4096)]


def best_seconds(fn):
    fn()
    best, total, r = 1e30, 0.0, 0
    while total < 0.3 or r < 3:
        t0 = time.perf_counter()
        fn()
        s = time.perf_counter() - t0
        best, total, r = min(best, s), total + s, r + 1
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, o, k in SHAPES:
            x = (torch.rand(n, k, generator=gen) * 2 - 1).to(torch.bfloat16)
            w = ((torch.rand(o, k, generator=gen) * 2 - 1) * 0.05).to(torch.bfloat16)
            dy = (torch.rand(n, o, generator=gen) * 2 - 1).to(torch.bfloat16)
            for op, fn in (("xwt", lambda: torch.matmul(x, w.t())), ("dy_w", lambda: torch.matmul(dy, w))):
                s = best_seconds(fn)
                print(json.dumps({"op": op, "N": n, "O": o, "K": k, "isa": f"torch {torch.__version__}",
                                  "ms": s * 1e3, "gflops": 2 * n * o * k / s * 1e-9}), flush=True)


if __name__ == "__main__":
    main()
