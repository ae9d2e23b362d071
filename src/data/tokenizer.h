// Tokenizer interface: text <-> token ids. Implementations: SentencePiece-style BPE (scores,
// byte fallback; llama2.c tokenizer.bin, tokenizer.model, GGUF "llama") and byte-level BPE
// (merges, GPT-2 byte map, regex pre-tokenizer; tokenizer.json, GGUF "gpt2").
// Tested in tests/data/ against llama.cpp's vocab test vectors and HF tokenizers.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace qlora {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Encodes text; prepends BOS when add_bos and the tokenizer has one.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos) const = 0;
  // The bytes one token stands for (byte tokens become their byte; SentencePiece's U+2581
  // becomes a space). `prev` lets SPM drop the dummy-prefix space after BOS.
  virtual std::string decode_token(int32_t id, int32_t prev = -1) const = 0;
  std::string decode(const std::vector<int32_t>& ids) const;

  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 when none
  virtual int32_t eos_id() const = 0;  // -1 when none
  virtual bool is_eog(int32_t id) const { return id == eos_id(); }  // end of generation
};

// Loads a tokenizer from a file: tokenizer.json, tokenizer.model (SentencePiece protobuf or
// tiktoken ranks), llama2.c tokenizer .bin, or a .gguf (model or tokenizer-only).
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

// Finds the tokenizer that belongs to a model: inside a GGUF, or beside the model file/folder
// (tokenizer.json, tokenizer.model, tokenizer.bin, tok*.bin). Throws Error naming the places
// it looked when there is none.
std::unique_ptr<Tokenizer> find_tokenizer_for_model(const std::string& model_path);

}  // namespace qlora
