// GPT-2 byte <-> unicode map; see byte_level.h.
#include "data/byte_level.h"

#include <array>
#include <unordered_map>

#include "data/utf8.h"

namespace qlora {
namespace {

struct ByteMap {
  std::array<std::string, 256> to_char;
  std::unordered_map<uint32_t, uint8_t> to_byte;

  ByteMap() {
    // Printable Latin-1 bytes map to themselves; the other 68 bytes take code points 256, 257, ...
    // in byte order (openai/gpt-2 encoder.py bytes_to_unicode).
    const auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const uint32_t cp = printable(b) ? static_cast<uint32_t>(b) : next++;
      utf8::append(to_char[b], cp);
      to_byte[cp] = static_cast<uint8_t>(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

}  // namespace

const std::string& byte_level_char(uint8_t b) { return byte_map().to_char[b]; }

std::string byte_level_encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += byte_map().to_char[static_cast<uint8_t>(c)];
  return out;
}

bool byte_level_decode(std::string_view text, std::string& out) {
  const auto& to_byte = byte_map().to_byte;
  size_t pos = 0;
  while (pos < text.size()) {
    const auto it = to_byte.find(utf8::next(text, pos));
    if (it == to_byte.end()) return false;
    out += static_cast<char>(it->second);
  }
  return true;
}

}  // namespace qlora
