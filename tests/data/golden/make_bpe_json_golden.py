#!/usr/bin/env python3
"""Makes bpe_json_golden.json: Hugging Face `tokenizers` ids for tokenizer.json files built from
the vocabularies in ../shared/data/llama-cpp-vocab-tests, on llama.cpp's test strings plus a few more:
- "variants": the GPT-2 vocabulary (ggml-vocab-gpt-2.gguf) with the pre-tokenizers (and
  normalizer) of GPT-2 itself, SmolLM2, Qwen2 and Llama 3;
- "spm_variants": the Llama 2 SentencePiece vocabulary (ggml-vocab-llama-spm.gguf) as a BPE
  tokenizer.json with byte_fallback, merges derived as transformers' SentencePieceExtractor does,
  in the legacy Prepend/Replace layout and with Metaspace pre-tokenizers.
tests/data/test_tokenizer_json.cpp builds the same tokenizer.json files in C++ (vocab and merges
from the GGUF, the rest from this file) and compares ids.

Run from the repository root:  python tests/data/golden/make_bpe_json_golden.py
Needs: tokenizers, gguf (pip).
"""
import json
import os
import sys

import gguf
import tokenizers
from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SHARED = os.environ.get("QLORA_SHARED_DIR", os.path.join(ROOT, "..", "shared"))
VOCAB_DIR = os.path.join(SHARED, "data", "llama-cpp-vocab-tests")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpe_json_golden.json")

BYTE_LEVEL_NO_REGEX = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
LLAMA3_RE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_RE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

VARIANTS = [
    {"name": "gpt2", "normalizer": None, "ignore_merges": False,
     "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}},
    {"name": "smollm2", "normalizer": None, "ignore_merges": False,
     "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
         {"type": "Digits", "individual_digits": True},
         {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}},
    {"name": "qwen2", "normalizer": {"type": "NFC"}, "ignore_merges": False,
     "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
         {"type": "Split", "pattern": {"Regex": QWEN2_RE}, "behavior": "Isolated", "invert": False},
         BYTE_LEVEL_NO_REGEX]}},
    {"name": "llama3", "normalizer": None, "ignore_merges": True,
     "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
         {"type": "Split", "pattern": {"Regex": LLAMA3_RE}, "behavior": "Isolated", "invert": False},
         BYTE_LEVEL_NO_REGEX]}},
]

EXTRA_TEXTS = [
    "Hello world! 123",
    "Prices: $1,234.56 and 7890 items; v2.0.1-rc3",
    "<|endoftext|>Special token in the middle<|endoftext|> and text",
    "I'm sure you've heard THEY'LL say it's fine",
    "tabs\tand\r\nwindows newlines\n\n\n   indented",
]


SPACE = "\u2581"
SPM_VARIANTS = [
    {"name": "llama2-legacy", "pre_tokenizer": None,
     "normalizer": {"type": "Sequence", "normalizers": [
         {"type": "Prepend", "prepend": SPACE},
         {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}]}},
    {"name": "metaspace-first", "normalizer": None,
     "pre_tokenizer": {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "first", "split": False}},
    {"name": "metaspace-always-split", "normalizer": None,
     "pre_tokenizer": {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "always", "split": True}},
]
SPM_EXTRA_TEXTS = ["Hello<s> world</s>again", "<s> leading special", "  two spaces", "x"]


def gguf_strings(reader, key):
    field = reader.fields[key]
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


def gguf_numbers(reader, key):
    field = reader.fields[key]
    return [field.parts[i][0].item() for i in field.data]


def spm_merges(tokens, scores, types):
    """Every split of a normal piece into two normal pieces, by merged score, then part lengths."""
    normal = {t for t, ty in zip(tokens, types) if ty == 1}
    merges = []
    for t, score, ty in zip(tokens, scores, types):
        if ty != 1:
            continue
        for k in range(1, len(t)):
            a, b = t[:k], t[k:]
            if a in normal and b in normal:
                merges.append((a, b, score))
    merges = sorted(merges, key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [f"{a} {b}" for a, b, _ in merges]


def spm_golden(texts):
    reader = gguf.GGUFReader(os.path.join(VOCAB_DIR, "ggml-vocab-llama-spm.gguf"))
    tokens = gguf_strings(reader, "tokenizer.ggml.tokens")
    scores = gguf_numbers(reader, "tokenizer.ggml.scores")
    types = gguf_numbers(reader, "tokenizer.ggml.token_type")
    merges = spm_merges(tokens, scores, types)
    out = []
    for v in SPM_VARIANTS:
        spec = {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True} for i in range(3)],
            "normalizer": v["normalizer"], "pre_tokenizer": v["pre_tokenizer"], "post_processor": None,
            "decoder": None,
            "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                      "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
        }
        tok = Tokenizer.from_str(json.dumps(spec))
        ids = [tok.encode(t, add_special_tokens=False).ids for t in texts]
        out.append({"name": v["name"], "normalizer": v["normalizer"], "pre_tokenizer": v["pre_tokenizer"], "ids": ids})
    return out


def main():
    reader = gguf.GGUFReader(os.path.join(VOCAB_DIR, "ggml-vocab-gpt-2.gguf"))
    tokens = gguf_strings(reader, "tokenizer.ggml.tokens")
    merges = gguf_strings(reader, "tokenizer.ggml.merges")
    eos = len(tokens) - 1
    assert tokens[eos] == "<|endoftext|>"

    with open(os.path.join(VOCAB_DIR, "ggml-vocab-gpt-2.gguf.inp"), encoding="utf-8") as f:
        texts = f.read().split("\n__ggml_vocab_test__\n")[:-1] + EXTRA_TEXTS

    out = {"generator": "tests/data/golden/make_bpe_json_golden.py", "tokenizers": tokenizers.__version__,
           "vocab": "ggml-vocab-gpt-2.gguf", "texts": texts, "variants": []}
    for v in VARIANTS:
        spec = {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": eos, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                              "rstrip": False, "normalized": False, "special": True}],
            "normalizer": v["normalizer"], "pre_tokenizer": v["pre_tokenizer"], "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": v["ignore_merges"], "vocab": {t: i for i, t in enumerate(tokens)},
                      "merges": merges},
        }
        tok = Tokenizer.from_str(json.dumps(spec))
        ids = [tok.encode(t, add_special_tokens=False).ids for t in texts]
        out["variants"].append({"name": v["name"], "normalizer": v["normalizer"], "pre_tokenizer": v["pre_tokenizer"],
                                "ignore_merges": v["ignore_merges"], "ids": ids})
    out["spm_texts"] = texts[:-len(EXTRA_TEXTS)] + SPM_EXTRA_TEXTS
    out["spm_vocab"] = "ggml-vocab-llama-spm.gguf"
    out["spm_variants"] = spm_golden(out["spm_texts"])
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT}: {len(texts)} texts x {len(VARIANTS)} variants", file=sys.stderr)


if __name__ == "__main__":
    main()
