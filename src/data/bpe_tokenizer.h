// Byte-level BPE (GPT-2 style): special tokens are cut out first, a regex pre-tokenizer splits the
// text into words, each word starts as its bytes and adjacent parts merge lowest-rank-first
// (llama.cpp llm_tokenizer_bpe_session; tiktoken's byte_pair_encode when ranks come from the
// vocabulary). The vocabulary spells tokens with GPT-2's byte characters (byte_level.h); merging
// runs on raw bytes. Tested in tests/data/test_tokenizer_bpe.cpp against llama.cpp's gpt-2 and
// llama-bpe vectors.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "data/pretokenizer.h"
#include "data/vocab.h"

namespace qlora {

struct BpeOptions {
  bool add_bos = false;
  // A word that is a whole token is taken as is, merges or not (Llama 3, tiktoken).
  bool ignore_merges = false;
  std::vector<std::string> pre_patterns;  // see Pretokenizer
  // Merge rules in priority order, spelled as the vocabulary spells tokens ("Ġ t").
  std::vector<std::pair<std::string, std::string>> merges;
  // tiktoken: no merge list; a pair may merge when its concatenation is a token, and that
  // token's id is the pair's rank.
  bool merges_from_ranks = false;
};

class BpeTokenizer final : public VocabTokenizer {
 public:
  // Throws Error when the vocabulary cannot spell a byte and has no unknown token to stand in.
  BpeTokenizer(Vocab vocab, BpeOptions options);

  using Tokenizer::encode;
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const override;
  std::vector<int32_t> encode_with_plain(std::string_view text, bool add_bos,
                                         const std::vector<TextSpan>& plain) const override;
  std::string decode_token(int32_t id, int32_t prev = -1) const override;
  std::string kind() const override { return "bpe"; }

  const Pretokenizer& pretokenizer() const { return pre_; }

 private:
  std::vector<int32_t> encode_fragments(const std::vector<TextFragment>& fragments, bool add_bos) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  BpeOptions options_;
  Pretokenizer pre_;
  std::vector<std::string> bytes_;       // raw bytes of every token, by id
  StringIdMap raw_index_;                // raw bytes -> id (normal tokens)
  std::array<int32_t, 256> byte_ids_{};  // one-byte tokens, -1 when absent
  // (left id << 32 | right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merge_ranks_;
};

}  // namespace qlora
