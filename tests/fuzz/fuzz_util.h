// Shared by the fuzz targets: inputs written to a per-process scratch folder (the readers take
// paths and memory-map them, as they do a user's files), a checksum that touches every byte of a
// tensor's elements (so a view past the end of the mapping faults even without ASan), and a tokenizer
// workout (encode, decode, token lookups).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace qlora {
class Tensor;
class Tokenizer;
}

namespace qlora::fuzz {

// Writes `bytes` to <scratch>/<name> (replacing it) and returns the path. The scratch folder is
// per process and removed at exit.
std::string write_input(const std::string& name, std::string_view bytes);
std::string scratch_dir();
// Reads every byte of every element of t (numel x dtype size, not nbytes).
uint64_t touch(const Tensor& t);
// Encodes and decodes a few texts and walks the vocabulary's edges.
void exercise(const Tokenizer& tok);

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace qlora::fuzz
