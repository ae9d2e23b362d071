// Block-wise 8-bit dynamic quantization and double quantization of absmax constants, as
// bitsandbytes quantize_blockwise / quantize_4bit(compress_statistics=True). See double_quant.h.
#include "quant/double_quant.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "core/error.h"
#include "quant/codebooks.h"

namespace qlora {

void quantize_blockwise_8bit(const float* x, int64_t n, int64_t block_size, uint8_t* codes, float* absmax,
                             BnbRounding rounding) {
  if (block_size <= 0) fail("quant", "quantize_blockwise_8bit: block size must be positive, got {}", block_size);
  cpu::quantize_blocks_8bit(x, n, block_size, kDynamicCode.data(), rounding == BnbRounding::Cpu ? &bnb_cpu_lut() : nullptr,
                            codes, absmax);
}

void dequantize_blockwise_8bit(const uint8_t* codes, const float* absmax, int64_t n, int64_t block_size,
                               float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = kDynamicCode[codes[i]] * absmax[i / block_size];
}

namespace {

// torch's f32 sum over a contiguous row (aten/src/ATen/native/cpu/SumKernel.cpp, cascade_sum), for
// vectors of kLanes floats: 4 interleaved accumulators per lane, each a 4-level cascade flushed
// every 2^level_power vectors; then the scalar tail, then the lanes in order. kLanes = 8 is what
// torch 2.x uses on x86 (AVX2 and AVX512 builds alike); rows shorter than kLanes take the scalar
// path, which is the same scheme with 1 lane. Single-threaded torch (rows below its 32768 grain).
template <int W>
struct Lanes {
  float v[W] = {};
  void add(const Lanes& o) {
    for (int k = 0; k < W; ++k) v[k] += o.v[k];
  }
  void load_add(const float* p) {
    for (int k = 0; k < W; ++k) v[k] += p[k];
  }
};

template <int W>
Lanes<W> torch_row_sum(const float* x, int64_t n_vec) {
  constexpr int kIlp = 4, kLevels = 4;
  const int64_t size_ilp = n_vec / kIlp;
  int64_t ceil_log2 = 0;
  while ((int64_t(1) << ceil_log2) < size_ilp) ++ceil_log2;
  const int64_t level_power = std::max<int64_t>(4, ceil_log2 / kLevels);
  const int64_t level_step = int64_t(1) << level_power, level_mask = level_step - 1;
  Lanes<W> acc[kLevels][kIlp];
  int64_t i = 0;
  for (; i + level_step <= size_ilp;) {
    for (int64_t j = 0; j < level_step; ++j, ++i)
      for (int k = 0; k < kIlp; ++k) acc[0][k].load_add(x + (i * kIlp + k) * W);
    for (int j = 1; j < kLevels; ++j) {
      for (int k = 0; k < kIlp; ++k) {
        acc[j][k].add(acc[j - 1][k]);
        acc[j - 1][k] = Lanes<W>{};
      }
      if ((i & (level_mask << (j * level_power))) != 0) break;
    }
  }
  for (; i < size_ilp; ++i)
    for (int k = 0; k < kIlp; ++k) acc[0][k].load_add(x + (i * kIlp + k) * W);
  for (int j = 1; j < kLevels; ++j)
    for (int k = 0; k < kIlp; ++k) acc[0][k].add(acc[j][k]);
  for (int64_t r = size_ilp * kIlp; r < n_vec; ++r) acc[0][0].load_add(x + r * W);
  for (int k = 1; k < kIlp; ++k) acc[0][0].add(acc[0][k]);
  return acc[0][0];
}

float torch_sum_f32(const float* x, int64_t n) {
  constexpr int kLanes = 8;
  if (n < kLanes) return torch_row_sum<1>(x, n).v[0];
  const int64_t n_vec = n / kLanes;
  Lanes<kLanes> lanes = torch_row_sum<kLanes>(x, n_vec);
  float total = 0.0f;
  for (int64_t i = n_vec * kLanes; i < n; ++i) total += x[i];
  for (int k = 0; k < kLanes; ++k) total += lanes.v[k];
  return total;
}

}  // namespace

float absmax_mean(const float* absmax, int64_t n) {
  if (n == 0) return 0.0f;
  // bitsandbytes: offset = absmax.mean(), which torch computes as an f32 sum divided by n.
  return torch_sum_f32(absmax, n) / float(n);
}

DoubleQuantized double_quantize(const std::vector<float>& absmax, BnbRounding rounding, int64_t nested_block_size) {
  DoubleQuantized dq;
  const int64_t n = int64_t(absmax.size());
  dq.nested_block_size = nested_block_size;
  dq.offset = absmax_mean(absmax.data(), n);
  std::vector<float> centered(absmax.size());
  for (int64_t i = 0; i < n; ++i) centered[i] = absmax[i] - dq.offset;
  dq.codes.resize(absmax.size());
  dq.nested_absmax.resize(size_t((n + nested_block_size - 1) / nested_block_size));
  quantize_blockwise_8bit(centered.data(), n, nested_block_size, dq.codes.data(), dq.nested_absmax.data(), rounding);
  return dq;
}

std::vector<float> double_dequantize(const std::vector<uint8_t>& codes, const std::vector<float>& nested_absmax,
                                     float offset, int64_t nested_block_size) {
  const int64_t n = int64_t(codes.size());
  if (int64_t(nested_absmax.size()) != (n + nested_block_size - 1) / nested_block_size)
    fail("quant", "double_dequantize: expected {} nested absmax values for {} codes in blocks of {}, got {}",
         (n + nested_block_size - 1) / nested_block_size, n, nested_block_size, nested_absmax.size());
  std::vector<float> out(codes.size());
  dequantize_blockwise_8bit(codes.data(), nested_absmax.data(), n, nested_block_size, out.data());
  for (float& v : out) v += offset;
  return out;
}

}  // namespace qlora
