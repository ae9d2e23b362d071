// NF4 / FP4 block-wise quantization, following bitsandbytes' quantize_4bit (backends/default/ops.py,
// the path bitsandbytes takes on CPU) and dequantize_4bit. See nf4.h.
#include "quant/nf4.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "core/error.h"
#include "quant/codebooks.h"

namespace qlora {
namespace {

void check_block_size(int64_t block_size) {
  bool pow2 = block_size > 0 && (block_size & (block_size - 1)) == 0;
  if (!pow2 || block_size < 32 || block_size > 4096)
    fail("quant", "quantize_4bit: block size must be a power of two in 32..4096 (as bitsandbytes); got {}",
         block_size);
}

void check_finite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i]))
      fail("quant", "quantize_4bit: input element {} is {}; expected finite values (a NaN/Inf weight "
           "cannot be scaled into a block)", i, std::isnan(x[i]) ? "NaN" : (x[i] > 0 ? "+Inf" : "-Inf"));
  }
}

void check_layout(const QuantTensor& q) {
  const int64_t n = q.numel();
  if (int64_t(q.codes.size()) != (n + 1) / 2)
    fail("quant", "dequantize_4bit: {} holds {} code bytes; expected {}", shape_str(q.shape), q.codes.size(),
         (n + 1) / 2);
  const size_t consts = q.double_quant ? q.absmax_codes.size() : q.absmax.size();
  if (int64_t(consts) != q.n_blocks())
    fail("quant", "dequantize_4bit: {} with block {} needs {} absmax values; got {}", shape_str(q.shape),
         q.block_size, q.n_blocks(), consts);
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
constexpr bool kVectorEncode = true;

// 16 scaled values -> their 4-bit codes as epi32, by the same rule as CodeBounds::encode:
// sorted position = #{bounds < v}, then the code at that position.
inline __m512i encode16(__m512 v, const CodeBounds<16>& bounds, __m512i order) {
  __m512i count = _mm512_setzero_si512();
  const __m512i one = _mm512_set1_epi32(1);
  for (int j = 0; j < 15; ++j) {
    const __mmask16 above = _mm512_cmp_ps_mask(v, _mm512_set1_ps(bounds.bounds[size_t(j)]), _CMP_GT_OQ);
    count = _mm512_mask_add_epi32(count, above, count, one);
  }
  return _mm512_permutexvar_epi32(count, order);
}

// Encodes 32 values scaled by `inv` into 16 bytes (first value of each pair in the high nibble).
inline void encode32(const float* x, float inv, const CodeBounds<16>& bounds, __m512i order, uint8_t* out) {
  const __m512 scale = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-1.0f), hi = _mm512_set1_ps(1.0f);
  const __m512 v0 = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_loadu_ps(x), scale), lo), hi);
  const __m512 v1 = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_loadu_ps(x + 16), scale), lo), hi);
  const __m128i c0 = _mm512_cvtepi32_epi8(encode16(v0, bounds, order));
  const __m128i c1 = _mm512_cvtepi32_epi8(encode16(v1, bounds, order));
  // Each 16-bit lane holds (even code, odd code) as (low byte, high byte).
  const __m256i pairs = _mm256_set_m128i(c1, c0);
  const __m256i packed = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(pairs, _mm256_set1_epi16(0x00ff)), 4),
                                         _mm256_srli_epi16(pairs, 8));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm256_cvtepi16_epi8(packed));
}
#else
constexpr bool kVectorEncode = false;
#endif

}  // namespace

std::string_view quant_type_name(QuantType type) {
  switch (type) {
    case QuantType::NF4: return "nf4";
    case QuantType::FP4: return "fp4";
    case QuantType::INT4: return "int4";
  }
  return "?";
}

QuantType quant_type_from_name(std::string_view name) {
  if (name == "nf4") return QuantType::NF4;
  if (name == "fp4") return QuantType::FP4;
  if (name == "int4") return QuantType::INT4;
  fail("quant", "unknown 4-bit type '{}'; expected nf4, fp4 or int4", name);
}

QuantTensor quantize_4bit(const float* x, const Shape& shape, QuantType type, int64_t block_size, bool double_quant,
                          Rounding8 absmax_rounding) {
  check_block_size(block_size);
  const int64_t n = shape_numel(shape);
  if (shape.empty() || n <= 0)
    fail("quant", "quantize_4bit: expected a non-empty tensor, got shape {}", shape_str(shape));
  check_finite(x, n);

  QuantTensor q;
  q.type = type;
  q.shape = shape;
  q.block_size = block_size;
  const int64_t n_blocks = q.n_blocks();
  std::vector<float> absmax(size_t(n_blocks), 0.0f);
  q.codes.assign(size_t((n + 1) / 2), 0);
  const CodeBounds<16>& bounds = bounds_4bit(type);
  // A missing last element (odd numel) is encoded as 0.0, as bitsandbytes pads the scaled values.
  const uint8_t pad = bounds.encode(0.0f);

#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t begin = b * block_size, end = std::min(n, begin + block_size);
    float am = 0.0f;
    for (int64_t i = begin; i < end; ++i) am = std::max(am, std::fabs(x[i]));
    absmax[size_t(b)] = am;
    // bitsandbytes: whole blocks scale by x * (1 / max(absmax, 1e-38)), the partial last block by
    // x / max(absmax, 1e-38) (the two differ in the last bit); then clamp to [-1, 1].
    const float am_safe = std::max(am, 1e-38f);
    const float inv = 1.0f / am_safe;
    const bool partial = end - begin < block_size;
    // Blocks hold an even count of values (block_size >= 32) except the last, so a byte never
    // straddles two threads' blocks.
    int64_t i = begin;
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    if (kVectorEncode && !partial) {  // whole blocks: a multiple of 32 values, byte-aligned
      const __m512i order = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bounds.order.data())));
      for (; i + 32 <= end; i += 32) encode32(x + i, inv, bounds, order, q.codes.data() + i / 2);
    }
#endif
    for (; i < end; ++i) {
      float v = partial ? x[i] / am_safe : x[i] * inv;
      uint8_t c = bounds.encode(std::clamp(v, -1.0f, 1.0f));
      uint8_t& byte = q.codes[size_t(i / 2)];
      byte = (i % 2 == 0) ? uint8_t((c << 4) | (byte & 0x0f)) : uint8_t((byte & 0xf0) | c);
    }
    if (end == n && n % 2 == 1) q.codes[size_t(n / 2)] = uint8_t((q.codes[size_t(n / 2)] & 0xf0) | pad);
  }

  if (double_quant) {
    DoubleQuantized dq = double_quantize(absmax, absmax_rounding);
    q.double_quant = true;
    q.absmax_codes = std::move(dq.codes);
    q.nested_absmax = std::move(dq.nested_absmax);
    q.nested_block_size = dq.nested_block_size;
    q.offset = dq.offset;
  } else {
    q.absmax = std::move(absmax);
  }
  return q;
}

QuantTensor quantize_4bit(const Tensor& x, QuantType type, int64_t block_size, bool double_quant) {
  if (x.dtype() == DType::F32) return quantize_4bit(x.data<float>(), x.shape(), type, block_size, double_quant);
  Tensor f = x.to(DType::F32);
  return quantize_4bit(f.data<float>(), f.shape(), type, block_size, double_quant);
}

std::vector<float> block_absmax(const QuantTensor& q) {
  if (!q.double_quant) return q.absmax;
  return double_dequantize(q.absmax_codes, q.nested_absmax, q.offset, q.nested_block_size);
}

void dequantize_4bit(const QuantTensor& q, float* out) {
  check_layout(q);
  const std::vector<float> absmax = block_absmax(q);
  const std::array<float, 16>& code = code_4bit(q.type);
  const int64_t n = q.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t byte = q.codes[size_t(i / 2)];
    const uint8_t c = (i % 2 == 0) ? uint8_t(byte >> 4) : uint8_t(byte & 0x0f);
    out[i] = code[c] * absmax[size_t(i / q.block_size)];
  }
}

void dequantize_4bit_bf16(const QuantTensor& q, uint16_t* out) {
  std::vector<float> tmp(size_t(q.numel()));
  dequantize_4bit(q, tmp.data());
  convert_f32_to_bf16(tmp.data(), out, tmp.size());
}

Tensor dequantize_4bit(const QuantTensor& q, DType dtype) {
  Tensor out = Tensor::zeros(q.shape, dtype);
  if (dtype == DType::F32) {
    dequantize_4bit(q, out.data<float>());
  } else if (dtype == DType::BF16) {
    dequantize_4bit_bf16(q, out.data<uint16_t>());
  } else {
    Tensor f = dequantize_4bit(q, DType::F32);
    return f.to(dtype);
  }
  return out;
}

}  // namespace qlora
