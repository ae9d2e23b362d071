"""Reference for bench_quantize: bitsandbytes' quantize_4bit / dequantize_4bit on CPU tensors.

Same (N, K) f32 matrix size and value range, block 64, nf4/fp4, with and without
compress_statistics (double quantization); prints one JSON line per case like bench_quantize.
"""
import json
import sys
import time

import bitsandbytes.functional as F
import torch


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 4096
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else torch.get_num_threads()
    repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    torch.set_num_threads(threads)
    x = (torch.rand(n, k, generator=torch.Generator().manual_seed(42)) * 2 - 1) * 0.05
    gbytes = x.numel() * 4 / 1e9
    for quant_type in ("nf4", "fp4"):
        for dq in (False, True):
            best_q = best_d = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                packed, state = F.quantize_4bit(x, blocksize=64, quant_type=quant_type, compress_statistics=dq)
                t1 = time.perf_counter()
                F.dequantize_4bit(packed, state)
                t2 = time.perf_counter()
                best_q, best_d = min(best_q, t1 - t0), min(best_d, t2 - t1)
            print(json.dumps({"impl": "bitsandbytes", "type": quant_type, "double_quant": dq, "threads": threads,
                              "quantize_gb_per_s": gbytes / best_q, "dequantize_gb_per_s": gbytes / best_d}))


if __name__ == "__main__":
    main()
