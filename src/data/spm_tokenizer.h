// SentencePiece-style BPE ("SPM"): spaces become U+2581, a dummy-prefix space starts the text,
// adjacent pieces merge best-score-first (llama.cpp llm_tokenizer_spm, llama2.c encode), and
// characters with no piece fall back to <0xNN> byte tokens. Hugging Face tokenizer.json files of
// SentencePiece models (Metaspace/Prepend + byte_fallback) rank merges by their merges list instead
// of scores. Tested in tests/data/test_tokenizer_spm.cpp against llama.cpp's llama-spm vectors.
#pragma once
#include <array>
#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

#include "data/vocab.h"

namespace qlora {

struct SpmOptions {
  enum class Prefix { Never, First, Always };
  bool add_bos = true;
  // Always: a space before every text run that starts the text or follows a special token
  // (SentencePiece add_dummy_prefix as llama.cpp applies it); First: only at the very start.
  Prefix space_prefix = Prefix::Always;
  // Hugging Face Metaspace: no prefix when the run already starts with a space.
  bool prefix_only_without_space = false;
  bool remove_extra_whitespaces = false;  // SentencePiece normalizer_spec: trim, collapse spaces
  bool split_words = false;               // Metaspace(split=true): no merge across a U+2581
  // Merge priority by rank, pairs of token ids in rank order (tokenizer.json). Empty: by score.
  std::vector<std::pair<int32_t, int32_t>> merges;
};

class SpmTokenizer final : public VocabTokenizer {
 public:
  SpmTokenizer(Vocab vocab, SpmOptions options);

  using Tokenizer::encode;
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const override;
  std::vector<int32_t> encode_with_plain(std::string_view text, bool add_bos,
                                         const std::vector<TextSpan>& plain) const override;
  std::string decode_token(int32_t id, int32_t prev = -1) const override;
  std::string kind() const override { return "spm"; }

 private:
  std::vector<int32_t> encode_fragments(const std::vector<TextFragment>& fragments, bool add_bos) const;
  // Merges one escaped text run (spaces already U+2581) and appends its ids.
  void encode_run(std::string_view text, std::vector<int32_t>& out) const;

  SpmOptions options_;
  std::array<int32_t, 256> byte_ids_{};  // <0xNN> tokens (or the unknown token)
  // (left id << 32 | right id) -> (rank, merged id); used when options_.merges is not empty.
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merge_ranks_;
};

}  // namespace qlora
