// Block-wise quantization kernels on the CPU (OpenMP over blocks, AVX-512 for whole 4-bit blocks):
// the compute under quant/'s formats. quant/nf4.h and quant/double_quant.h validate, pick the
// codebook and rounding rule, and lay out the QuantTensor; these only compute, on host memory.
// The rounding rule is bitsandbytes': a scaled value v in [-1, 1] takes the code at sorted
// position #{bounds < v}, bounds being the f32 midpoints of neighbouring sorted codes
// (torch.bucketize, right=False: a value exactly on a midpoint takes the lower code).
// Compiled with -ffp-contract=off: no a*b+c -> fma contraction, so scales round as bitsandbytes'.
// Tested, byte for byte against bitsandbytes, in tests/quant/test_bnb_golden.cpp and
// tests/quant/test_nf4.cpp, test_double_quant.cpp.
#pragma once
#include <array>
#include <cstdint>

namespace qlora::cpu {

// Sorted-code midpoints and the code index of each sorted position.
template <int N>
struct CodeBounds {
  std::array<float, N - 1> bounds{};
  std::array<uint8_t, N> order{};

  // The code index for a scaled value (finite, in [-1, 1]).
  uint8_t encode(float v) const {
    int lo = 0, hi = N - 1;  // first bound >= v, by binary search over [lo, hi)
    while (lo < hi) {
      int mid = (lo + hi) / 2;
      if (bounds[mid] < v) lo = mid + 1;
      else hi = mid;
    }
    return order[lo];
  }
};

// codes (ceil(n / 2) bytes, high nibble first) and absmax (ceil(n / block_size)) of x (n finite
// values): per block absmax = max |x|, codes = bounds.encode(clamp(x / absmax)). Whole blocks
// scale by x * (1 / max(absmax, 1e-38)), a partial last block by x / max(absmax, 1e-38), as
// bitsandbytes does; an odd last element's partner nibble encodes 0.0. block_size is even.
void quantize_blocks_4bit(const float* x, int64_t n, int64_t block_size, const CodeBounds<16>& bounds,
                          uint8_t* codes, float* absmax);

// out (n) = code[nibble] * absmax[i / block_size], in f32.
void dequantize_blocks_4bit(const uint8_t* codes, const float* absmax, const float* code, int64_t n,
                            int64_t block_size, float* out);

// codes (n) and absmax (ceil(n / block_size)) of x against a sorted 256-entry code: with `lut`
// null, the nearest code by `bounds` (scaled as quantize_blocks_4bit); with `lut`, bitsandbytes'
// CPU lookup table over [-1, 1] (v * (1 / absmax), a zero block writes code 0).
void quantize_blocks_8bit(const float* x, int64_t n, int64_t block_size, const CodeBounds<256>& bounds,
                          const std::array<uint8_t, 65536>* lut, uint8_t* codes, float* absmax);

// absmax (n) = code[codes[i]] * nested_absmax[i / nested_block_size] + offset, in f32 (the
// double-quantized constants of a 4-bit weight; bitsandbytes' dequantize_blockwise + offset).
void decode_absmax_8bit(const uint8_t* codes, const float* nested_absmax, const float* code, int64_t n,
                        int64_t nested_block_size, float offset, float* absmax);

}  // namespace qlora::cpu
