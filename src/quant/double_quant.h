// Block-wise 8-bit quantization with the dynamic map (bitsandbytes quantize_blockwise) and, on top
// of it, double quantization of 4-bit absmax constants (bitsandbytes compress_statistics, QLoRA
// section 3): offset = mean(absmax); (absmax - offset) quantized in blocks of 256 with the signed
// dynamic map, one f32 absmax per block. Tested in tests/quant/test_double_quant.cpp and, byte for
// byte against bitsandbytes, in tests/quant/test_bnb_golden.cpp.
#pragma once
#include <cstdint>
#include <vector>

namespace qlora {

// How a scaled value picks its 8-bit code.
enum class Rounding8 : uint8_t {
  // The nearest code (midpoints between sorted codes; a tie takes the lower code): bitsandbytes'
  // torch reference path (backends/default/ops.py); its CUDA kernel also rounds to the nearest
  // code (exact ties aside). The default: most accurate, and what GPU-made checkpoints hold.
  Nearest,
  // bitsandbytes >= 0.49 on CPU: a 65536-entry lookup table over [-1, 1], so |v| below ~1.5e-5
  // snaps to the codes at +-2.1e-5 instead of 0. Only to reproduce CPU-made checkpoints bit for bit.
  BnbCpuLut,
};

// codes[i] = code index of x[i] / absmax[i / block_size] in kDynamicCode; absmax has
// ceil(n / block_size) entries. A block of zeros gets absmax 0.
void quantize_blockwise_8bit(const float* x, int64_t n, int64_t block_size, uint8_t* codes, float* absmax,
                             Rounding8 rounding = Rounding8::Nearest);
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
DoubleQuantized double_quantize(const std::vector<float>& absmax, Rounding8 rounding = Rounding8::Nearest,
                                int64_t nested_block_size = kNestedBlockSize);
// absmax[i] = kDynamicCode[codes[i]] * nested_absmax[i / nested_block_size] + offset (in f32)
std::vector<float> double_dequantize(const std::vector<uint8_t>& codes, const std::vector<float>& nested_absmax,
                                     float offset, int64_t nested_block_size = kNestedBlockSize);

}  // namespace qlora
