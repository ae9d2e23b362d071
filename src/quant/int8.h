// Absmax int8 quantization (LLM.int8(), Dettmers et al. 2022; the QLoRA paper's eq. 1):
//   c = 127 / absmax(X),  X_int8 = round(c * X)  (round half to even, as torch.round),
//   X ≈ X_int8 / c,
// per tensor or per block of `block_size` values. Tested in tests/quant/test_int8.cpp.
#pragma once
#include <cstdint>
#include <vector>

namespace qlora {

struct Int8Quantized {
  std::vector<int8_t> values;  // (n)
  std::vector<float> absmax;   // one per block; a single one when per tensor
  int64_t block_size = 0;      // values per absmax (n when per tensor)
};

// c = 127 / absmax; 0 when absmax is 0 (an all-zero block quantizes to zeros).
float int8_scale(float absmax);

// Throws Error on a non-finite input (naming the element) or a block size < 1.
Int8Quantized quantize_int8(const float* x, int64_t n);
Int8Quantized quantize_int8_blockwise(const float* x, int64_t n, int64_t block_size);
// out[i] = values[i] * absmax[block] / 127
void dequantize_int8(const Int8Quantized& q, float* out);

}  // namespace qlora
