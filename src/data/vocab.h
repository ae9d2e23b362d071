// The vocabulary both tokenizer kinds share: token pieces with score and type, the text -> id
// index, special ids (BOS/EOS/EOT/...), the end-of-generation set, and the matcher that cuts
// special/added tokens out of text before BPE. VocabTokenizer implements the Tokenizer methods
// that need nothing but the vocabulary. Tested in tests/data/test_tokenizer_*.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "data/tokenizer.h"

namespace qlora {

// SentencePiece's piece types; GGUF's tokenizer.ggml.token_type uses the same numbers.
enum class TokenType : uint8_t {
  Undefined = 0,
  Normal = 1,
  Unknown = 2,
  Control = 3,
  UserDefined = 4,
  Unused = 5,
  Byte = 6
};

struct VocabToken {
  std::string text;  // as the source spells it: U+2581 for SPM spaces, GPT-2 byte chars for BPE
  float score = 0.0f;
  TokenType type = TokenType::Normal;
};

// The byte a SentencePiece byte piece "<0xNN>" (two hex digits) stands for, or -1 for any other text.
int byte_piece_value(std::string_view text);

struct SpecialIds {
  int32_t bos = -1, eos = -1, unk = -1, pad = -1, eot = -1, eom = -1;
};

// Hash for string-keyed maps looked up by string_view without a copy.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// A run of text with no special token in it (id < 0), or one special token (id >= 0).
struct TextFragment {
  std::string_view text;
  int32_t id = -1;
};

class Vocab {
 public:
  Vocab() = default;
  // Builds the index. Throws Error("[tokenizer] <source>: ...") when the vocabulary is empty, a
  // special id is out of range or a Byte token is not "<0xNN>". Tokens whose text says end-of-generation (<|eot_id|>, <|im_end|>,
  // <|endoftext|>, ... as llama.cpp's list) join the EOG set and become Control.
  Vocab(std::vector<VocabToken> tokens, SpecialIds ids, const std::string& source);

  int32_t size() const { return static_cast<int32_t>(tokens_.size()); }
  const VocabToken& token(int32_t id) const;  // throws Error for an id out of range
  const std::vector<VocabToken>& tokens() const { return tokens_; }
  int32_t find(std::string_view text) const;  // -1 when absent; the last id wins on duplicates
  const SpecialIds& ids() const { return ids_; }
  bool is_special(int32_t id) const;  // Control, UserDefined or Unknown
  bool is_control(int32_t id) const;  // Control or Unknown
  bool is_eog(int32_t id) const { return eog_.count(id) != 0; }

  // Splits text at special tokens, leftmost first and longest on ties (Hugging Face's added-token
  // matcher). With parse_special false only user-defined (added, non-special) tokens count, as in
  // llama.cpp. With `plain` (sorted, disjoint byte ranges), a special token that would overlap one
  // of them is not matched there: that text came from data and stays text.
  std::vector<TextFragment> split_special(std::string_view text, bool parse_special,
                                          const std::vector<TextSpan>* plain = nullptr) const;

 private:
  std::vector<VocabToken> tokens_;
  StringIdMap index_;
  SpecialIds ids_;
  std::unordered_set<int32_t> eog_;
  std::vector<std::vector<int32_t>> specials_by_byte_;  // by first byte, longest text first
};

// Tokenizer methods that need only the vocabulary.
class VocabTokenizer : public Tokenizer {
 public:
  VocabTokenizer(Vocab vocab, bool add_bos) : vocab_(std::move(vocab)), add_bos_(add_bos) {}

  int32_t vocab_size() const override { return vocab_.size(); }
  int32_t bos_id() const override { return vocab_.ids().bos; }
  int32_t eos_id() const override { return vocab_.ids().eos; }
  int32_t pad_id() const override { return vocab_.ids().pad; }
  bool is_eog(int32_t id) const override { return vocab_.is_eog(id); }
  bool is_special(int32_t id) const override { return vocab_.is_special(id); }
  bool is_control(int32_t id) const override { return vocab_.is_control(id); }
  bool adds_bos() const override { return add_bos_; }
  std::string token_text(int32_t id) const override { return vocab_.token(id).text; }
  int32_t token_id(std::string_view text) const override { return vocab_.find(text); }
  std::vector<TextSpan> special_spans(std::string_view text) const override;

  const Vocab& vocab() const { return vocab_; }

 protected:
  Vocab vocab_;
  bool add_bos_ = false;
};

}  // namespace qlora
