// GGML tensor types: their block geometry (so a GGUF reader can size any tensor) and the
// dequantization kernels for the types we load (Q8_0, Q4_0, Q4_1, F16, BF16, F32).
// Block layouts follow ggml/src/ggml-common.h. Tested in tests/unit/test_gguf.cpp on hand-made
// blocks against hand-computed values.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace qlora {

// Elements per block and bytes per block of a GGML type; {0, 0} for an id we do not know.
struct GgmlTypeTraits {
  uint32_t block_elems = 0;
  uint32_t block_bytes = 0;
  const char* name = nullptr;
};
GgmlTypeTraits ggml_type_traits(uint32_t type);

// True for the types dequantize_ggml() handles.
bool ggml_type_dequantizable(uint32_t type);

// Dequantizes `n` elements (a multiple of the type's block size) from `src` to f32 `dst`.
// The caller checks the type with ggml_type_dequantizable() and the sizes.
void dequantize_ggml(uint32_t type, const uint8_t* src, float* dst, size_t n);

// The kernels, one per type (n a multiple of 32).
void dequantize_q8_0(const uint8_t* src, float* dst, size_t n);
void dequantize_q4_0(const uint8_t* src, float* dst, size_t n);
void dequantize_q4_1(const uint8_t* src, float* dst, size_t n);

}  // namespace qlora
