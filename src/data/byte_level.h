// GPT-2's byte <-> unicode map (bytes_to_unicode in openai/gpt-2 encoder.py): byte-level BPE
// vocabularies spell every byte as a printable character ('Ġ' = space, 'Ċ' = newline), so their
// token strings must be mapped back to raw bytes. Tested in tests/data/test_tokenizer_bpe.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace qlora {

// The printable character (UTF-8) that stands for byte `b`.
const std::string& byte_level_char(uint8_t b);

// Raw bytes -> byte-level spelling.
std::string byte_level_encode(std::string_view bytes);

// Byte-level spelling -> raw bytes; false (out untouched past what was written) when a
// character is not in the map.
bool byte_level_decode(std::string_view text, std::string& out);

}  // namespace qlora
