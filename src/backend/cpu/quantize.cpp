// Block-wise 4-bit and 8-bit quantization kernels. See quantize.h.
#include "backend/cpu/quantize.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

namespace qlora::cpu {
namespace {

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
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
// Without AVX-512 (e.g. AVX2-only CPUs): the same rule written so that the compiler vectorises the
// threshold counts across the 32 values (a binary search per value ran at ~20 ns/value).
inline void encode32(const float* x, float inv, const CodeBounds<16>& bounds, const uint8_t* order, uint8_t* out) {
  int32_t count[32];
  for (int k = 0; k < 32; ++k) {
    const float v = std::min(std::max(x[k] * inv, -1.0f), 1.0f);
    int32_t c = 0;
    for (int j = 0; j < 15; ++j) c += bounds.bounds[size_t(j)] < v ? 1 : 0;
    count[k] = c;
  }
  for (int k = 0; k < 16; ++k) out[k] = uint8_t((order[count[2 * k]] << 4) | order[count[2 * k + 1]]);
}
#endif

// max |x| over [begin, end): a block's absmax.
float range_absmax(const float* x, int64_t begin, int64_t end) {
  float am = 0.0f;
  for (int64_t i = begin; i < end; ++i) am = std::max(am, std::fabs(x[i]));
  return am;
}

// For each block, over threads: absmax[b] = max |x| of the block, then fn(begin, end, absmax[b]).
template <typename Fn>
void for_each_block(const float* x, int64_t n, int64_t block_size, float* absmax, Fn&& fn) {
  const int64_t n_blocks = (n + block_size - 1) / block_size;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t begin = b * block_size, end = std::min(n, begin + block_size);
    absmax[b] = range_absmax(x, begin, end);
    fn(begin, end, absmax[b]);
  }
}

// Encodes the whole 32-value groups of [i, end) with `bounds` (x * inv, clamped), two codes per
// byte; returns where it stopped. Only for blocks whose start is byte-aligned.
int64_t encode_groups(const float* x, int64_t i, int64_t end, float inv, const CodeBounds<16>& bounds,
                      uint8_t* codes) {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
  const __m512i order = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bounds.order.data())));
#else
  const uint8_t* order = bounds.order.data();
#endif
  for (; i + 32 <= end; i += 32) encode32(x + i, inv, bounds, order, codes + i / 2);
  return i;
}

// Stores code c as value i's nibble (even i: high nibble).
inline void put_nibble(uint8_t* codes, int64_t i, uint8_t c) {
  uint8_t& byte = codes[i / 2];
  byte = (i % 2 == 0) ? uint8_t((c << 4) | (byte & 0x0f)) : uint8_t((byte & 0xf0) | c);
}

uint8_t lut_encode(const std::array<uint8_t, 65536>& lut, float v) {
  v = std::clamp(v, -1.0f, 1.0f);
  const auto idx = static_cast<uint16_t>((v + 1.0f) * 0.5f * float(65536 - 1) + 0.5f);
  return lut[idx];
}

}  // namespace

void quantize_blocks_4bit(const float* x, int64_t n, int64_t block_size, const CodeBounds<16>& bounds,
                          uint8_t* codes, float* absmax) {
  const uint8_t pad = bounds.encode(0.0f);
  for_each_block(x, n, block_size, absmax, [&](int64_t begin, int64_t end, float am) {
    const float am_safe = std::max(am, 1e-38f);
    const float inv = 1.0f / am_safe;
    const bool partial = end - begin < block_size;
    // Blocks hold an even count of values except the last, so a byte never straddles two threads.
    int64_t i = begin;
    if (!partial) i = encode_groups(x, i, end, inv, bounds, codes);  // whole blocks: multiples of 32
    for (; i < end; ++i) {
      const float v = partial ? x[i] / am_safe : x[i] * inv;
      put_nibble(codes, i, bounds.encode(std::clamp(v, -1.0f, 1.0f)));
    }
    if (end == n && n % 2 == 1) put_nibble(codes, n, pad);  // the odd last value's partner
  });
}

void quantize_blocks_4bit_kernel(const float* x, int64_t n, int64_t block_size, const KernelCode4& rule,
                                 uint8_t* codes, float* absmax) {
  for_each_block(x, n, block_size, absmax, [&](int64_t begin, int64_t end, float am) {
    const float inv = 1.0f / am;  // +inf for a zero block: every v is NaN, every code 0
    int64_t i = begin;
    // Signed thresholds inside (-1, 1) count the same with or without the CPU rule's clamp.
    if (!rule.sign_magnitude && am > 0.0f && end - begin == block_size)
      i = encode_groups(x, i, end, inv, rule.bounds, codes);
    for (; i < end; ++i) put_nibble(codes, i, rule.encode(x[i] * inv));
    if (end == n && n % 2 == 1) put_nibble(codes, n, rule.encode(0.0f * inv));  // the kernel pads with 0
  });
}

uint8_t kernel_code_8bit(const float* code, float v) {
  // Invariant: code[lower_index] < v <= code[upper_index] once each has been set by a comparison;
  // the search never visits index 255, so the upper end starts there.
  int pivot = 127, lower_index = 0, upper_index = 255;
  float lower = -1.0f, upper = 1.0f, at = code[pivot];
  for (int step = 64; step > 0; step /= 2) {
    if (v > at) {
      lower_index = pivot, lower = at;
      pivot += step;
    } else {
      upper_index = pivot, upper = at;
      pivot -= step;
    }
    at = code[pivot];
  }
  if (upper_index == 255) upper = code[255];
  if (lower_index == 0) lower = code[0];
  if (v > at) return uint8_t(v > (upper + at) * 0.5f ? upper_index : pivot);
  return uint8_t(v < (lower + at) * 0.5f ? lower_index : pivot);
}

void dequantize_blocks_4bit(const uint8_t* codes, const float* absmax, const float* code, int64_t n,
                            int64_t block_size, float* out) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t byte = codes[i / 2];
    const uint8_t c = (i % 2 == 0) ? uint8_t(byte >> 4) : uint8_t(byte & 0x0f);
    out[i] = code[c] * absmax[i / block_size];
  }
}

void quantize_blocks_8bit(const float* x, int64_t n, int64_t block_size, const float* code,
                          const std::array<uint8_t, 65536>* lut, uint8_t* codes, float* absmax) {
  for_each_block(x, n, block_size, absmax, [&](int64_t begin, int64_t end, float am) {
    if (lut) {
      // cpu_ops.cpp quantize_cpu_impl: a zero block writes code 0; otherwise v * (1 / absmax).
      const float inv = am == 0.0f ? 0.0f : 1.0f / am;
      for (int64_t i = begin; i < end; ++i) codes[i] = am == 0.0f ? 0 : lut_encode(*lut, x[i] * inv);
    } else {
      const float inv = 1.0f / am;  // +inf for a zero block: NaN, which the bisection sends to 0
      for (int64_t i = begin; i < end; ++i) codes[i] = kernel_code_8bit(code, x[i] * inv);
    }
  });
}

void decode_absmax_8bit(const uint8_t* codes, const float* nested_absmax, const float* code, int64_t n,
                        int64_t nested_block_size, float offset, float* absmax) {
  for (int64_t i = 0; i < n; ++i) {
    absmax[i] = code[codes[i]] * nested_absmax[i / nested_block_size];
    absmax[i] += offset;  // two roundings, as dequantize_blockwise then + offset
  }
}

}  // namespace qlora::cpu
