"""Reference for bench_forward: the same measurement with transformers on torch CPU.

Loads the same model (HF folder, or GGUF via transformers' GGUF support, dequantized to f32),
runs a prefill of `seq` random tokens with logits for all positions, then `decode` single-token
steps with the KV cache; prints one JSON line like bench_forward does.
"""
import json
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def load(path, dtype):
    if path.endswith(".gguf"):
        return AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                                    gguf_file=os.path.basename(path), torch_dtype=dtype)
    return AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype)


def main():
    path = sys.argv[1]
    seq = int(sys.argv[2]) if len(sys.argv) > 2 else 128
    decode = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else os.cpu_count()
    repeats = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[sys.argv[6] if len(sys.argv) > 6 else "f32"]
    torch.set_num_threads(threads)
    model = load(path, dtype).eval()
    gen = torch.Generator().manual_seed(1234)
    ids = torch.randint(0, model.config.vocab_size, (1, seq + decode), generator=gen)
    best_prefill = best_decode = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = model(ids[:, :seq], use_cache=True)
            t1 = time.perf_counter()
            past = out.past_key_values
            for i in range(decode):
                out = model(ids[:, seq + i:seq + i + 1], past_key_values=past, use_cache=True,
                            logits_to_keep=1)
                past = out.past_key_values
            t2 = time.perf_counter()
            best_prefill = min(best_prefill, t1 - t0)
            best_decode = min(best_decode, t2 - t1)
    print(json.dumps({"impl": "torch " + torch.__version__, "threads": threads, "seq": seq, "decode": decode,
                      "prefill_tokens_per_s": seq / best_prefill,
                      "decode_tokens_per_s": decode / best_decode if decode else 0.0}))


if __name__ == "__main__":
    main()
