// A byte tokenizer for data-pipeline tests that need no model file: ids 0-255 are bytes, then
// <s>, </s>, <|im_start|>, <|im_end|> (specials matched whole in text when parse_special). The pad
// id is configurable, so pad == eos can be tested.
#pragma once
#include <string>
#include <vector>

#include "core/error.h"
#include "data/tokenizer.h"

namespace qlora::test {

class ToyTokenizer : public Tokenizer {
 public:
  static constexpr int32_t kBos = 256, kEos = 257, kImStart = 258, kImEnd = 259;
  explicit ToyTokenizer(int32_t pad = -1, bool add_bos = true) : pad_(pad), add_bos_(add_bos) {}

  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const override {
    return parse_special ? encode_with_plain(text, add_bos, {}) : encode_with_plain(text, add_bos, {{0, text.size()}});
  }
  std::vector<int32_t> encode_with_plain(std::string_view text, bool add_bos,
                                         const std::vector<TextSpan>& plain) const override {
    auto overlaps_plain = [&](size_t b, size_t e) {
      for (const TextSpan& p : plain)
        if (b < p.end && p.begin < e) return true;
      return false;
    };
    std::vector<int32_t> out;
    if (add_bos) out.push_back(kBos);
    for (size_t i = 0; i < text.size();) {
      bool matched = false;
      {
        for (int32_t id = kBos; id <= kImEnd; ++id) {
          const std::string s = token_text(id);
          if (text.substr(i, s.size()) == s && !overlaps_plain(i, i + s.size())) {
            out.push_back(id);
            i += s.size();
            matched = true;
            break;
          }
        }
      }
      if (!matched) out.push_back(static_cast<unsigned char>(text[i++]));
    }
    return out;
  }
  std::vector<TextSpan> special_spans(std::string_view text) const override {
    std::vector<TextSpan> out;
    for (size_t i = 0; i < text.size();) {
      size_t len = 0;
      for (int32_t id = kBos; id <= kImEnd && !len; ++id)
        if (text.substr(i, token_text(id).size()) == token_text(id)) len = token_text(id).size();
      if (len) out.push_back({i, i + len});
      i += len ? len : 1;
    }
    return out;
  }
  std::string decode_token(int32_t id, int32_t) const override {
    if (id < 0 || id >= vocab_size()) fail("toy", "id {} out of range", id);
    return id < 256 ? std::string(1, char(id)) : token_text(id);
  }
  int32_t vocab_size() const override { return 260; }
  int32_t bos_id() const override { return kBos; }
  int32_t eos_id() const override { return kEos; }
  int32_t pad_id() const override { return pad_; }
  bool is_eog(int32_t id) const override { return id == kEos || id == kImEnd; }
  bool is_special(int32_t id) const override { return id >= 256; }
  bool adds_bos() const override { return add_bos_; }
  std::string token_text(int32_t id) const override {
    static const char* kSpecial[] = {"<s>", "</s>", "<|im_start|>", "<|im_end|>"};
    return id >= 256 ? kSpecial[id - 256] : std::string(1, char(id));
  }
  int32_t token_id(std::string_view text) const override {
    for (int32_t id = 0; id < vocab_size(); ++id)
      if (token_text(id) == text) return id;
    return -1;
  }
  std::string kind() const override { return "toy"; }

 private:
  int32_t pad_;
  bool add_bos_;
};

}  // namespace qlora::test
