// Small UTF-8 helpers shared by the tokenizers: sequence length from a lead byte (as llama.cpp's
// unicode_len_utf8, so malformed input never stalls a loop), code point decode/encode.
// Tested through tests/data/test_tokenizer_*.cpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace qlora::utf8 {

// Bytes in the sequence that starts with `lead`; 1 for continuation/invalid bytes.
inline size_t seq_len(uint8_t lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

// Length of the character at `pos`, clipped to the end of `s`.
inline size_t char_len(std::string_view s, size_t pos) {
  const size_t n = seq_len(static_cast<uint8_t>(s[pos]));
  return n < s.size() - pos ? n : s.size() - pos;
}

inline void append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Decodes the character at `pos` and advances `pos`; a malformed byte decodes as itself.
inline uint32_t next(std::string_view s, size_t& pos) {
  const size_t n = char_len(s, pos);
  const auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(s[pos + i])); };
  uint32_t cp = b(0);
  if (n == 2) cp = ((cp & 0x1F) << 6) | (b(1) & 0x3F);
  if (n == 3) cp = ((cp & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
  if (n == 4) cp = ((cp & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  pos += n;
  return cp;
}

}  // namespace qlora::utf8
