// Tokenizers across formats, for model export: a GGUF's tokenizer.ggml.* byte-level BPE
// vocabulary as Hugging Face tokenizer.json + tokenizer_config.json, and an HF tokenizer.json
// (byte-level BPE) as tokenizer.ggml.* metadata. Tested in tests/unit/test_merge_export.cpp
// (the written tokenizer.json loads in our HF loader and encodes like the GGUF one).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "io/gguf.h"
#include "io/gguf_writer.h"

namespace qlora {

struct HfTokenizerFiles {
  nlohmann::ordered_json tokenizer;         // tokenizer.json
  nlohmann::ordered_json tokenizer_config;  // tokenizer_config.json
};

// From tokenizer.ggml.model "gpt2" (byte-level BPE). The pre-tokenizer follows tokenizer.ggml.pre
// as the model's own tokenizer.json spells it (smollm: Digits(individual) + ByteLevel; llama-bpe:
// the Llama 3 Split regex + ByteLevel; qwen2: Qwen2's regex; else GPT-2's ByteLevel). Throws Error
// naming the file for other tokenizer models.
HfTokenizerFiles hf_tokenizer_from_gguf(const GgufFile& gguf);

// Copies every tokenizer.* key of `gguf` with the types llama.cpp reads them as.
void copy_gguf_tokenizer(const GgufFile& gguf, GgufWriter& out);

// Adds tokenizer.ggml.* built from an HF folder's tokenizer.json (+ tokenizer_config.json) when it
// is byte-level BPE; returns false (adds nothing) for anything else.
bool gguf_tokenizer_from_hf(const std::string& hf_dir, GgufWriter& out);

}  // namespace qlora
