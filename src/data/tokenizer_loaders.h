// Internal to src/data: one loader per tokenizer file format, dispatched by load_tokenizer()
// (tokenizer.cpp). Each throws Error("[tokenizer] <path>: ...") on a corrupt file.
// Tested in tests/data/test_tokenizer_*.cpp.
#pragma once
#include <memory>
#include <string>
#include <string_view>

#include "data/tokenizer.h"

namespace qlora {

// The whole file; throws Error naming the path when it cannot be read.
std::string read_tokenizer_file(const std::string& path);

// GGUF metadata: tokenizer.ggml.model "llama" (SPM) or "gpt2" (byte-level BPE).
std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& path);
// Hugging Face tokenizer.json (model BPE, byte-level or SentencePiece-style); reads
// tokenizer_config.json beside it for BOS/EOS/PAD when present.
std::unique_ptr<Tokenizer> load_hf_json_tokenizer(const std::string& path, std::string_view data);
// SentencePiece ModelProto (tokenizer.model), BPE models.
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path, std::string_view data);
// llama2.c tokenizer.bin: int32 max_token_length, then (float32 score, int32 len, bytes) per token.
std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path, std::string_view data);
// tiktoken ranks ("<base64 token> <rank>" per line), as Llama 3's tokenizer.model.
std::unique_ptr<Tokenizer> load_tiktoken_tokenizer(const std::string& path, std::string_view data);
// Whether `data` starts like a tiktoken ranks file.
bool looks_like_tiktoken(std::string_view data);

}  // namespace qlora
