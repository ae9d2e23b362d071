// Block-wise 8-bit quantization with the dynamic map (bitsandbytes quantize_blockwise) and, on top
// of it, double quantization of 4-bit absmax constants (bitsandbytes compress_statistics, QLoRA
// section 3): offset = mean(absmax); (absmax - offset) quantized in blocks of 256 with the signed
// dynamic map, one f32 absmax per block. Tested in tests/quant/test_double_quant.cpp and, byte for
// byte against bitsandbytes, in tests/quant/test_bnb_golden.cpp.
#pragma once
#include <cstdint>
#include <vector>

namespace qlora {

// Which bitsandbytes implementation a quantizer reproduces byte for byte. They differ where a
// scaled value sits near the boundary between two codes, and on zero blocks:
enum class BnbRounding : uint8_t {
  // Its CUDA kernels (what a checkpoint quantized on a GPU holds; the default). 4-bit codes by the
  // kernel's threshold trees (NF4's thresholds are the f32 midpoints but for 4 one ulp off; FP4's
  // are decimal constants up to 14 ulp off them, compared against |v|), 8-bit codes by its
  // bisection with f32 midpoints (nearest, ties resolved by the search path); v = x * (1 / absmax)
  // in every block.
  Cuda,
  // bitsandbytes >= 0.49 on CPU: 4-bit codes by torch.bucketize over the f32 midpoints (the
  // default backend; a partial last block divides), 8-bit codes through a 65536-entry lookup
  // table over [-1, 1], so |v| below ~1.5e-5 snaps to the codes at +-2.1e-5 instead of 0 and
  // values within ~1.5e-5 of a midpoint may take the farther code.
  Cpu,
};

// codes[i] = code index of x[i] / absmax[i / block_size] in kDynamicCode; absmax has
// ceil(n / block_size) entries. A block of zeros gets absmax 0.
void quantize_blockwise_8bit(const float* x, int64_t n, int64_t block_size, uint8_t* codes, float* absmax,
                             BnbRounding rounding = BnbRounding::Cuda);
// out[i] = kDynamicCode[codes[i]] * absmax[i / block_size]
void dequantize_blockwise_8bit(const uint8_t* codes, const float* absmax, int64_t n, int64_t block_size,
                               float* out);

struct DoubleQuantized {
  std::vector<uint8_t> codes;         // (n)
  std::vector<float> nested_absmax;   // (ceil(n / nested_block_size))
  float offset = 0.0f;
  int64_t nested_block_size = 256;
};

constexpr int64_t kNestedBlockSize = 256;  // bitsandbytes quantize_4bit(compress_statistics=True)

// The mean of the absmax values bit for bit as torch computes it in f32 (its cascaded sum, then
// divided by n), for up to 32768 values (beyond, torch splits the sum across threads).
float absmax_mean(const float* absmax, int64_t n);
DoubleQuantized double_quantize(const std::vector<float>& absmax, BnbRounding rounding = BnbRounding::Cuda,
                                int64_t nested_block_size = kNestedBlockSize);
// absmax[i] = kDynamicCode[codes[i]] * nested_absmax[i / nested_block_size] + offset (in f32)
std::vector<float> double_dequantize(const std::vector<uint8_t>& codes, const std::vector<float>& nested_absmax,
                                     float offset, int64_t nested_block_size = kNestedBlockSize);

}  // namespace qlora
