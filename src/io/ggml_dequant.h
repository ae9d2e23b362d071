// GGML tensor types: their block geometry (so a GGUF reader can size any tensor) and the
// dequantization kernels for the types we load: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and
// the k-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (what Q4_K_M / Q5_K_M / Q6_K files on the hub hold).
// Block layouts follow ggml/src/ggml-common.h; each value is computed with the same f32
// operations in the same order as gguf-py's dequantize, without fma contraction, so the results
// are bit-identical to it on any machine. Tested in tests/unit/test_gguf.cpp on hand-made blocks
// and in tests/unit/test_gguf_dequant.cpp against gguf-py on blocks llama.cpp's quantizer wrote.
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

// The kernels, one per type (n a multiple of 32, or of 256 for the k-quants).
void dequantize_q8_0(const uint8_t* src, float* dst, size_t n);
void dequantize_q4_0(const uint8_t* src, float* dst, size_t n);
void dequantize_q4_1(const uint8_t* src, float* dst, size_t n);
void dequantize_q5_0(const uint8_t* src, float* dst, size_t n);
void dequantize_q5_1(const uint8_t* src, float* dst, size_t n);
void dequantize_q2_k(const uint8_t* src, float* dst, size_t n);
void dequantize_q3_k(const uint8_t* src, float* dst, size_t n);
void dequantize_q4_k(const uint8_t* src, float* dst, size_t n);
void dequantize_q5_k(const uint8_t* src, float* dst, size_t n);
void dequantize_q6_k(const uint8_t* src, float* dst, size_t n);

}  // namespace qlora
