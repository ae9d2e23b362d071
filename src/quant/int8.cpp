// Absmax int8 quantization, per tensor and block-wise. See int8.h.
#include "quant/int8.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace qlora {

float int8_scale(float absmax) { return absmax == 0.0f ? 0.0f : 127.0f / absmax; }

Int8Quantized quantize_int8_blockwise(const float* x, int64_t n, int64_t block_size) {
  if (block_size < 1) fail("quant", "quantize_int8: block size must be >= 1, got {}", block_size);
  if (n < 0) fail("quant", "quantize_int8: element count must be >= 0, got {}", n);
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i]))
      fail("quant", "quantize_int8: input element {} is {}; expected finite values", i,
           std::isnan(x[i]) ? "NaN" : "Inf");
  Int8Quantized q;
  q.block_size = block_size;
  q.values.resize(size_t(n));
  const int64_t n_blocks = (n + block_size - 1) / block_size;
  q.absmax.resize(size_t(n_blocks));
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t begin = b * block_size, end = std::min(n, begin + block_size);
    float am = 0.0f;
    for (int64_t i = begin; i < end; ++i) am = std::max(am, std::fabs(x[i]));
    q.absmax[size_t(b)] = am;
    const float c = int8_scale(am);
    // |c * x| <= 127 up to rounding of c; the clamp keeps a 127.00001 from wrapping.
    for (int64_t i = begin; i < end; ++i)
      q.values[size_t(i)] = int8_t(std::clamp(std::nearbyint(c * x[i]), -127.0f, 127.0f));
  }
  return q;
}

Int8Quantized quantize_int8(const float* x, int64_t n) {
  return quantize_int8_blockwise(x, n, std::max<int64_t>(n, 1));
}

void dequantize_int8(const Int8Quantized& q, float* out) {
  const int64_t n = int64_t(q.values.size());
  for (int64_t i = 0; i < n; ++i)
    out[i] = float(q.values[size_t(i)]) * (q.absmax[size_t(i / q.block_size)] / 127.0f);
}

}  // namespace qlora
