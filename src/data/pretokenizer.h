// Regex pre-tokenizer for byte-level BPE: splits text into words before merging, with PCRE2
// (UTF + UCP, JIT when available). Several patterns run in sequence; each splits every piece the
// previous one produced into its matches and the gaps between them (Hugging Face Split with
// behavior "Isolated", llama.cpp unicode_regex_split). Presets mirror llama.cpp's per-model
// pre-tokenizers (llama-vocab.cpp, llm_tokenizer_bpe). Tested in tests/data/test_tokenizer_bpe.cpp.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace qlora {

// GPT-2's pattern (openai/gpt-2 encoder.py); Hugging Face ByteLevel(use_regex=true) uses it too.
extern const char* const kGpt2Pattern;
// Llama 3's pattern with the case-insensitive group spelled out, as llama.cpp does.
extern const char* const kLlama3Pattern;
// Qwen2's: Llama 3's with single digits.
extern const char* const kQwen2Pattern;

class Pretokenizer {
 public:
  Pretokenizer() = default;  // no splitting: the whole text is one word
  // Throws Error("[tokenizer] bad pre-tokenizer regex ...") when a pattern does not compile.
  explicit Pretokenizer(std::vector<std::string> patterns);

  // Patterns for a preset: "gpt2", "llama3", "qwen2", "smollm" (digits one by one, then GPT-2's),
  // "default" (llama.cpp's fallback). Throws Error listing the presets for an unknown name.
  static std::vector<std::string> preset(std::string_view name);

  // Pieces of `text` in order; they concatenate back to `text`. Bytes that are not valid UTF-8
  // become one-byte pieces of their own.
  std::vector<std::string_view> split(std::string_view text) const;

  const std::vector<std::string>& patterns() const { return patterns_; }

 private:
  struct Regex;
  void split_valid(const Regex& re, std::string_view text, std::vector<std::string_view>& out) const;

  std::vector<std::string> patterns_;
  std::vector<std::shared_ptr<const Regex>> regexes_;
};

}  // namespace qlora
