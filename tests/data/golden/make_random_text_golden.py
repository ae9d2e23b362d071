#!/usr/bin/env python3
"""Makes random_text_golden.json: seeded random strings (letters of many scripts, digits, emoji,
combining marks, all kinds of whitespace and punctuation, contractions) and their ids from the
reference implementations themselves:
- "llama2": Google's `sentencepiece` on ../shared/models/llama2-tokenizer/tokenizer.model;
- "llama3": Hugging Face `tokenizers` on a tokenizer.json converted from Meta's tiktoken
  ../shared/models/llama3-tokenizer/tokenizer.model the way transformers' TikTokenConverter does
  (vocab = ranks, merges = every split of a token into two tokens, by rank), with Llama 3's
  pre-tokenizer pattern and ignore_merges.
tests/data/test_tokenizer_random.cpp compares qlora's tokenizers with these ids.

Run from the repository root:  python tests/data/golden/make_random_text_golden.py
Needs: sentencepiece, tokenizers (pip).
"""
import base64
import json
import os
import random
import sys

import sentencepiece
import tokenizers
from tokenizers import Tokenizer

SEED = 20240607
N_TEXTS = 200
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SHARED = os.environ.get("QLORA_SHARED_DIR", os.path.join(ROOT, "..", "shared"))
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "random_text_golden.json")
LLAMA3_RE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

POOL = [
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\u00a0", "\u3000", "\u2009", "\u0085", "\u180e", "\u2028", "\x0b",
    "a", "b", "The", "the", "hello", "World", "ing", "tion", "'s", "'S", "'ll", "'re", "'VE", "'d", "'m", "'t",
    "0", "1", "12", "123", "4567", "3.14", "1,000",
    ".", ",", "!", "?", "...", "--", "\u2014", "(", ")", "[", "]", "{", "}", "\"", "'", "`", "#", "$", "%", "&",
    "*", "/", "\\", "_", "-", "+", "=", "<", ">", "|", "~", "^", "@",
    "\u00e9", "\u00fc", "\u00df", "\u00f1", "\u0416", "\u043f\u0440\u0438\u0432\u0435\u0442", "\u03b5\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    "\u05e2\u05d1\u05e8\u05d9\u05ea", "\u0639\u0631\u0628\u0649", "\u0939\u093f\u0928\u094d\u0926\u0940", "\u4e2d\u6587",
    "\u65e5\u672c\u8a9e", "\ud55c\uad6d\uc5b4", "\u0e44\u0e17\u0e22", "\u1780\u17d2\u179a\u17bb\u1784",
    "\U0001f999", "\U0001f600", "\U0001f44d\U0001f3fd", "\U0001f1fa\U0001f1f8", "\u200d", "\ufe0f", "x\u0301",
    "\u00bd", "\u00b2", "\u216b", "\u2460", "\u0663", "\u096c",
]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def llama3_tokenizer(path):
    byte_char = bytes_to_unicode()
    spell = lambda b: "".join(byte_char[x] for x in b)
    ranks = {}
    with open(path, "rb") as f:
        for line in f:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    vocab, merges = {}, []
    for token, rank in ranks.items():
        vocab[spell(token)] = rank
        local = [(token[:i], token[i:], rank) for i in range(1, len(token))
                 if token[:i] in ranks and token[i:] in ranks]
        local.sort(key=lambda m: (ranks[m[0]], ranks[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: m[2])
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    spec = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_RE}, "behavior": "Isolated", "invert": False}, byte_level]},
        "post_processor": None, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": [[spell(a), spell(b)] for a, b, _ in merges]},
    }
    return Tokenizer.from_str(json.dumps(spec))


def main():
    rng = random.Random(SEED)
    texts = ["".join(rng.choice(POOL) for _ in range(rng.randint(1, 20))) for _ in range(N_TEXTS)]
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(SHARED, "models/llama2-tokenizer/tokenizer.model"))
    llama3 = llama3_tokenizer(os.path.join(SHARED, "models/llama3-tokenizer/tokenizer.model"))
    out = {
        "generator": "tests/data/golden/make_random_text_golden.py", "seed": SEED,
        "sentencepiece": sentencepiece.__version__, "tokenizers": tokenizers.__version__, "texts": texts,
        "llama2": [sp.encode(t) for t in texts],
        "llama3": [llama3.encode(t, add_special_tokens=False).ids for t in texts],
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT}: {N_TEXTS} texts", file=sys.stderr)


if __name__ == "__main__":
    main()
