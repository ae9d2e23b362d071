// Block-wise quantization kernels on the CPU (OpenMP over blocks, AVX-512 for whole 4-bit blocks):
// the compute under quant/'s formats. quant/nf4.h and quant/double_quant.h validate, pick the
// codebook and rounding rule, and lay out the QuantTensor; these only compute, on host memory.
// Two rules, as the two bitsandbytes implementations round (quant/double_quant.h, BnbRounding):
//  - its CUDA kernels (csrc/kernels.cu kQuantizeBlockwise): v = x * (1 / absmax) in every block,
//    no clamp; 4-bit codes by the kernel's threshold trees (KernelCode4), 8-bit codes by its
//    7-step bisection with f32 midpoints (kernel_code_8bit). A zero block gives v = 0 * inf = NaN,
//    which every comparison rejects: code 0.
//  - on the CPU: 4-bit codes by torch.bucketize over the f32 midpoints of the sorted codes (a value
//    on a midpoint takes the lower code; whole blocks x * (1 / absmax), a partial last block
//    x / absmax, absmax at least 1e-38), 8-bit codes through the 65536-entry lookup table of
//    csrc/cpu_ops.cpp.
// Compiled with -ffp-contract=off: no a*b+c -> fma contraction, so scales round as bitsandbytes'.
// Tested, byte for byte against bitsandbytes, in tests/quant/test_bnb_golden.cpp,
// test_bnb_real_weights.cpp, test_nf4.cpp and test_double_quant.cpp.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>

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

// bitsandbytes' CUDA rule for one 4-bit code (dQuantizeNF4 / dQuantizeFP4): the code at position
// #{thresholds < v}; FP4's code is sign-magnitude (bit 3 = v < 0, the rest from |v| against its
// own thresholds). NaN takes code 0, as every `v > threshold` of the kernel's tree is false.
// (Its 1 / absmax is the GPU's approximate reciprocal; we use the correctly rounded one: see
// docs/quantization.md for what that leaves.)
struct KernelCode4 {
  CodeBounds<16> bounds;        // signed thresholds and code order (when !sign_magnitude)
  bool sign_magnitude = false;  // FP4
  CodeBounds<8> magnitude;      // |v| thresholds and magnitude codes (when sign_magnitude)

  uint8_t encode(float v) const {
    if (!sign_magnitude) return bounds.encode(v);
    // The kernel flushes denormals to zero (FMUL.FTZ): a negative denormal keeps the + sign.
    const bool negative = v <= -std::numeric_limits<float>::min();
    return uint8_t((negative ? 8 : 0) | magnitude.encode(std::fabs(v)));
  }
};

// codes (ceil(n / 2) bytes, high nibble first) and absmax (ceil(n / block_size)) of x (n finite
// values), bitsandbytes-CPU rule: per block absmax = max |x|, codes = bounds.encode(clamp(x /
// absmax)). Whole blocks scale by x * (1 / max(absmax, 1e-38)), a partial last block by
// x / max(absmax, 1e-38); an odd last element's partner nibble encodes 0.0. block_size is even.
void quantize_blocks_4bit(const float* x, int64_t n, int64_t block_size, const CodeBounds<16>& bounds,
                          uint8_t* codes, float* absmax);
// The same layout, bitsandbytes-CUDA rule: codes = rule.encode(x * (1 / absmax)) in every block
// (the odd last element's partner is a 0.0 scaled likewise, as the kernel pads its loads).
void quantize_blocks_4bit_kernel(const float* x, int64_t n, int64_t block_size, const KernelCode4& rule,
                                 uint8_t* codes, float* absmax);

// The CUDA kernel's 8-bit code for a scaled value (kernels.cu dQuantize<0>): a 7-step bisection of
// the sorted 256-entry code from index 127, then the nearer of the final pivot and the neighbour
// on v's side by an f32 midpoint. A value on that midpoint keeps the pivot, so which of two codes
// a tie takes depends on the search path.
uint8_t kernel_code_8bit(const float* code, float v);

// out (n) = code[nibble] * absmax[i / block_size], in f32.
void dequantize_blocks_4bit(const uint8_t* codes, const float* absmax, const float* code, int64_t n,
                            int64_t block_size, float* out);

// codes (n) and absmax (ceil(n / block_size)) of x against a sorted 256-entry code, v = x * (1 /
// absmax) in every block: with `lut` null, kernel_code_8bit (the CUDA rule); with `lut`,
// bitsandbytes' CPU lookup table over [-1, 1] (a zero block writes code 0).
void quantize_blocks_8bit(const float* x, int64_t n, int64_t block_size, const float* code,
                          const std::array<uint8_t, 65536>* lut, uint8_t* codes, float* absmax);

// absmax (n) = code[codes[i]] * nested_absmax[i / nested_block_size] + offset, in f32 (the
// double-quantized constants of a 4-bit weight; bitsandbytes' dequantize_blockwise + offset).
void decode_absmax_8bit(const uint8_t* codes, const float* nested_absmax, const float* code, int64_t n,
                        int64_t nested_block_size, float offset, float* absmax);

}  // namespace qlora::cpu
