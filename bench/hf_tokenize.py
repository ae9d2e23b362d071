#!/usr/bin/env python3
"""Hugging Face tokenizers throughput on a text file, the reference for bench_tokenize.

Usage: hf_tokenize.py TOKENIZER TEXT_FILE [REPEATS]
TOKENIZER: a tokenizer.json, a folder holding one, or a .gguf (converted by transformers' GGUF
loader, which needs the gguf package). Encodes the whole text with add_special_tokens=False on one
thread (the Rust tokenizer's own parallelism is only used for batches) and prints one JSON line
like bench_tokenize.
"""
import json
import os
import sys
import time


def load(path):
    if path.endswith(".gguf"):
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path))
        return tok.backend_tokenizer
    from tokenizers import Tokenizer
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    return Tokenizer.from_file(path)


def main():
    tok = load(sys.argv[1])
    with open(sys.argv[2], encoding="utf-8", errors="replace") as f:
        text = f.read()
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    best, n = 1e30, 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = len(tok.encode(text, add_special_tokens=False).ids)
        best = min(best, time.perf_counter() - t0)
    size = len(text.encode("utf-8"))
    print(json.dumps({"impl": "hf-tokenizers", "bytes": size, "tokens": n, "seconds": round(best, 4),
                      "mb_per_s": round(size / 1e6 / best, 3)}))


if __name__ == "__main__":
    main()
