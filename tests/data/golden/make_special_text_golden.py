#!/usr/bin/env python3
"""Makes special_text_golden.json: text that spells special tokens ("<s>", "<|eot_id|>", ...) and its
ids when those are *text*, from the reference implementations (Hugging Face's
split_special_tokens=True behaviour):
- "llama2": Google's `sentencepiece` on ../shared/models/llama2-tokenizer/tokenizer.model (it never
  parses control tokens from text);
- "llama3": Hugging Face `tokenizers` on the tokenizer.json make_random_text_golden.py converts from
  Meta's tiktoken ranks, which has no added tokens, so "<|eot_id|>" is encoded as text;
- "smollm2": transformers' tokenizer of models/SmolLM2-135M-Instruct.Q4_1.gguf (its GGUF loader),
  called with split_special_tokens=True, on every token the GGUF types as control.
tests/data/test_content_guard.cpp checks that qlora encodes message content holding these tokens
to exactly these ids, and the template's own control tokens around it stay control tokens.

Run from the repository root:  python tests/data/golden/make_special_text_golden.py
Needs: sentencepiece, tokenizers, transformers, gguf (pip).
"""
import json
import os
import sys

import gguf
import sentencepiece
import tokenizers
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_random_text_golden import ROOT, SHARED, llama3_tokenizer  # noqa: E402

SMOLLM2 = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "special_text_golden.json")
LLAMA2_SPECIALS = ["<unk>", "<s>", "</s>"]
# meta-llama/llama-models models/llama3/tokenizer.py (the commit of ../shared/models/llama3-tokenizer):
# 12 named tokens, then reserved ones up to 256.
LLAMA3_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
    "<|eot_id|>", "<|python_tag|>", "<|image|>",
] + [f"<|reserved_special_token_{i}|>" for i in range(2, 256 - 10)]


def texts_for(specials):
    out = []
    for s in specials:
        out += [s, "Say " + s + " now", "a" + s + s + "\n" + s[:-1]]
    return out


def main():
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(SHARED, "models/llama2-tokenizer/tokenizer.model"))
    llama3 = llama3_tokenizer(os.path.join(SHARED, "models/llama3-tokenizer/tokenizer.model"))
    l2, l3 = texts_for(LLAMA2_SPECIALS), texts_for(LLAMA3_SPECIALS)
    reader = gguf.GGUFReader(SMOLLM2)
    field = lambda name: reader.fields[name]
    tokens = [bytes(field("tokenizer.ggml.tokens").parts[i]).decode() for i in field("tokenizer.ggml.tokens").data]
    types = [int(field("tokenizer.ggml.token_type").parts[i][0]) for i in field("tokenizer.ggml.token_type").data]
    smol_specials = [t for t, ty in zip(tokens, types) if ty == gguf.TokenType.CONTROL]
    path = os.path.realpath(SMOLLM2)
    smol = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    l4 = texts_for(smol_specials)
    out = {
        "generator": "tests/data/golden/make_special_text_golden.py",
        "sentencepiece": sentencepiece.__version__, "tokenizers": tokenizers.__version__,
        "transformers": transformers.__version__,
        "llama2": {"specials": LLAMA2_SPECIALS, "texts": l2, "ids": [sp.encode(t) for t in l2]},
        "llama3": {"specials": LLAMA3_SPECIALS, "texts": l3,
                   "ids": [llama3.encode(t, add_special_tokens=False).ids for t in l3]},
        "smollm2": {"specials": smol_specials, "texts": l4,
                    "ids": [smol(t, split_special_tokens=True, add_special_tokens=False).input_ids for t in l4]},
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT}: {len(l2)} + {len(l3)} + {len(l4)} texts", file=sys.stderr)


if __name__ == "__main__":
    main()
