// GGML type table and dequantization kernels. Block layouts (ggml-common.h), 32 values per block:
//   Q8_0: f16 d, int8 q[32]            -> x = d * q
//   Q4_0: f16 d, uint8 qs[16]          -> x[j] = d * ((qs[j] & 15) - 8), x[j+16] = d * ((qs[j] >> 4) - 8)
//   Q4_1: f16 d, f16 m, uint8 qs[16]   -> x[j] = d * (qs[j] & 15) + m,   x[j+16] = d * (qs[j] >> 4) + m
//   Q5_0: f16 d, u32 qh, uint8 qs[16]  -> q = low nibble (j < 16) or high nibble of qs[j % 16], with
//                                         bit j of qh as its 5th bit; x = d * (q - 16)
//   Q5_1: f16 d, f16 m, u32 qh, qs[16] -> the same q; x = d * q + m
// and the k-quants, 256 values per super-block in sub-blocks of 16 or 32, each with its own scale
// (and min) quantized against the super-block's f16 d (and dmin):
//   Q2_K: scales[16] (4-bit scale | 4-bit min), qs[64] (2 bits), f16 d, f16 dmin
//         x = (d * scale) * q - (dmin * min), sub-blocks of 16
//   Q3_K: hmask[32] (3rd bit, set = no offset), qs[64] (2 bits), scales[12] (16 six-bit scales,
//         offset 32), f16 d; x = (d * scale) * (q - 4 * !hbit), sub-blocks of 16
//   Q4_K: f16 d, f16 dmin, scales[12] (8 six-bit scales and mins), qs[128] (4 bits)
//         x = (d * scale) * q - (dmin * min), sub-blocks of 32
//   Q5_K: Q4_K's header, qh[32] (5th bit), qs[128]
//   Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], f16 d
//         x = (d * scale) * (q - 32), sub-blocks of 16
// Within a k-quant super-block, value i of a group of 32 (or 64) takes its bits from byte i of the
// group's bytes at successive shifts (the loops below spell out which).
#include "io/ggml_dequant.h"

#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "io/gguf.h"

namespace qlora {
namespace {

constexpr size_t kQK = 32;   // elements per block of the *_0 / *_1 types
constexpr size_t kQKK = 256;  // elements per super-block of the k-quants

// Sizes from ggml's type_traits (gguf-py GGML_QUANT_SIZES); unknown ids stay {0, 0}.
GgmlTypeTraits traits_table(uint32_t type) {
  switch (type) {
    case 0: return {1, 4, "F32"};
    case 1: return {1, 2, "F16"};
    case 2: return {32, 18, "Q4_0"};
    case 3: return {32, 20, "Q4_1"};
    case 6: return {32, 22, "Q5_0"};
    case 7: return {32, 24, "Q5_1"};
    case 8: return {32, 34, "Q8_0"};
    case 9: return {32, 36, "Q8_1"};
    case 10: return {256, 84, "Q2_K"};
    case 11: return {256, 110, "Q3_K"};
    case 12: return {256, 144, "Q4_K"};
    case 13: return {256, 176, "Q5_K"};
    case 14: return {256, 210, "Q6_K"};
    case 15: return {256, 292, "Q8_K"};
    case 16: return {256, 66, "IQ2_XXS"};
    case 17: return {256, 74, "IQ2_XS"};
    case 18: return {256, 98, "IQ3_XXS"};
    case 19: return {256, 50, "IQ1_S"};
    case 20: return {32, 18, "IQ4_NL"};
    case 21: return {256, 110, "IQ3_S"};
    case 22: return {256, 82, "IQ2_S"};
    case 23: return {256, 136, "IQ4_XS"};
    case 24: return {1, 1, "I8"};
    case 25: return {1, 2, "I16"};
    case 26: return {1, 4, "I32"};
    case 27: return {1, 8, "I64"};
    case 28: return {1, 8, "F64"};
    case 29: return {256, 56, "IQ1_M"};
    case 30: return {1, 2, "BF16"};
    case 34: return {256, 54, "TQ1_0"};
    case 35: return {256, 66, "TQ2_0"};
    case 39: return {32, 17, "MXFP4"};
    default: return {};
  }
}

inline float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

}  // namespace

GgmlTypeTraits ggml_type_traits(uint32_t type) { return traits_table(type); }

std::string ggml_type_name(uint32_t type) {
  const GgmlTypeTraits t = traits_table(type);
  return t.name ? std::string(t.name) : "type " + std::to_string(type);
}

bool ggml_type_dequantizable(uint32_t type) {
  switch (GgmlType(type)) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_0:
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::Q2_K:
    case GgmlType::Q3_K:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K: return true;
  }
  return false;
}

void dequantize_q8_0(const uint8_t* src, float* dst, size_t n) {
  const size_t blocks = n / kQK;
#pragma omp parallel for if (blocks > 4096)
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* block = src + b * 34;
    const float d = load_f16(block);
    const int8_t* q = reinterpret_cast<const int8_t*>(block + 2);
    float* out = dst + b * kQK;
    for (size_t j = 0; j < kQK; ++j) out[j] = d * float(q[j]);
  }
}

void dequantize_q4_0(const uint8_t* src, float* dst, size_t n) {
  const size_t blocks = n / kQK;
#pragma omp parallel for if (blocks > 4096)
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* block = src + b * 18;
    const float d = load_f16(block);
    const uint8_t* qs = block + 2;
    float* out = dst + b * kQK;
    for (size_t j = 0; j < kQK / 2; ++j) {
      out[j] = d * float(int(qs[j] & 0x0f) - 8);
      out[j + kQK / 2] = d * float(int(qs[j] >> 4) - 8);
    }
  }
}

void dequantize_q4_1(const uint8_t* src, float* dst, size_t n) {
  const size_t blocks = n / kQK;
#pragma omp parallel for if (blocks > 4096)
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* block = src + b * 20;
    const float d = load_f16(block);
    const float m = load_f16(block + 2);
    const uint8_t* qs = block + 4;
    float* out = dst + b * kQK;
    for (size_t j = 0; j < kQK / 2; ++j) {
      out[j] = d * float(qs[j] & 0x0f) + m;
      out[j + kQK / 2] = d * float(qs[j] >> 4) + m;
    }
  }
}

namespace {

// The 5-bit values of a Q5_0 / Q5_1 block: low nibbles then high nibbles of qs, bit j of qh on top.
void q5_values(const uint8_t* qh_bytes, const uint8_t* qs, int q[kQK]) {
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, 4);
  for (size_t j = 0; j < kQK; ++j) {
    const int low = j < kQK / 2 ? qs[j] & 0x0f : qs[j - kQK / 2] >> 4;
    q[j] = low | int((qh >> j) & 1) << 4;
  }
}

// Q4_K / Q5_K: the 6-bit scale and min of sub-block k (0..7) from the 12 packed bytes: the first
// four of each in the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); the last four from the
// nibbles of bytes 8-11 with their top 2 bits taken from the top of bytes 0-7.
void k_scale_min(const uint8_t* s, int k, int& scale, int& min) {
  if (k < 4) {
    scale = s[k] & 63;
    min = s[k + 4] & 63;
  } else {
    scale = (s[k + 4] & 0x0f) | ((s[k - 4] >> 2) & 0x30);
    min = (s[k + 4] >> 4) | ((s[k] >> 2) & 0x30);
  }
}

}  // namespace

void dequantize_q5_0(const uint8_t* src, float* dst, size_t n) {
  const size_t blocks = n / kQK;
#pragma omp parallel for if (blocks > 4096)
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* block = src + b * 22;
    const float d = load_f16(block);
    int q[kQK];
    q5_values(block + 2, block + 6, q);
    for (size_t j = 0; j < kQK; ++j) dst[b * kQK + j] = d * float(q[j] - 16);
  }
}

void dequantize_q5_1(const uint8_t* src, float* dst, size_t n) {
  const size_t blocks = n / kQK;
#pragma omp parallel for if (blocks > 4096)
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* block = src + b * 24;
    const float d = load_f16(block), m = load_f16(block + 2);
    int q[kQK];
    q5_values(block + 4, block + 8, q);
    for (size_t j = 0; j < kQK; ++j) dst[b * kQK + j] = d * float(q[j]) + m;
  }
}

void dequantize_q2_k(const uint8_t* src, float* dst, size_t n) {
  const size_t blocks = n / kQKK;
#pragma omp parallel for if (blocks > 512)
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* block = src + b * 84;
    const uint8_t* scales = block;
    const uint8_t* qs = block + 16;
    const float d = load_f16(block + 80), dmin = load_f16(block + 82);
    float* out = dst + b * kQKK;
    // Two halves of 128 values, each from 32 bytes at shifts 0, 2, 4, 6.
    for (size_t i = 0; i < kQKK; ++i) {
      const size_t half = i / 128, shift = (i % 128) / 32, j = i % 32;
      const uint8_t sc = scales[i / 16];
      const float dl = d * float(sc & 0x0f), ml = dmin * float(sc >> 4);
      out[i] = dl * float((qs[half * 32 + j] >> (2 * shift)) & 3) - ml;
    }
  }
}

void dequantize_q3_k(const uint8_t* src, float* dst, size_t n) {
  const size_t blocks = n / kQKK;
#pragma omp parallel for if (blocks > 512)
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* block = src + b * 110;
    const uint8_t* hmask = block;
    const uint8_t* qs = block + 32;
    const uint8_t* s = block + 96;
    const float d = load_f16(block + 108);
    float* out = dst + b * kQKK;
    for (size_t i = 0; i < kQKK; ++i) {
      const size_t half = i / 128, shift = (i % 128) / 32, j = i % 32, k = i / 16;
      // Scale k: low nibble of byte k % 8 (k < 8) or its high nibble, and 2 high bits from byte
      // 8 + k % 4 at shift 2 * (k / 4).
      const int low = (s[k % 8] >> (4 * (k / 8))) & 0x0f, high = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
      const float dl = d * float((low | high << 4) - 32);
      const int q = (qs[half * 32 + j] >> (2 * shift)) & 3;
      const int hbit = (hmask[j] >> (half * 4 + shift)) & 1;
      out[i] = dl * float(q - (hbit ? 0 : 4));
    }
  }
}

void dequantize_q4_k(const uint8_t* src, float* dst, size_t n) {
  const size_t blocks = n / kQKK;
#pragma omp parallel for if (blocks > 512)
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* block = src + b * 144;
    const float d = load_f16(block), dmin = load_f16(block + 2);
    const uint8_t* qs = block + 16;
    float* out = dst + b * kQKK;
    // Four chunks of 64 values from 32 bytes each: low nibbles, then high nibbles.
    for (int k = 0; k < 8; ++k) {
      int scale, min;
      k_scale_min(block + 4, k, scale, min);
      const float dl = d * float(scale), ml = dmin * float(min);
      const uint8_t* bytes = qs + (k / 2) * 32;
      for (size_t j = 0; j < 32; ++j) out[k * 32 + j] = dl * float((bytes[j] >> (4 * (k % 2))) & 0x0f) - ml;
    }
  }
}

void dequantize_q5_k(const uint8_t* src, float* dst, size_t n) {
  const size_t blocks = n / kQKK;
#pragma omp parallel for if (blocks > 512)
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* block = src + b * 176;
    const float d = load_f16(block), dmin = load_f16(block + 2);
    const uint8_t* qh = block + 16;
    const uint8_t* qs = block + 48;
    float* out = dst + b * kQKK;
    for (int k = 0; k < 8; ++k) {
      int scale, min;
      k_scale_min(block + 4, k, scale, min);
      const float dl = d * float(scale), ml = dmin * float(min);
      const uint8_t* bytes = qs + (k / 2) * 32;
      for (size_t j = 0; j < 32; ++j) {
        const int q = ((bytes[j] >> (4 * (k % 2))) & 0x0f) | ((qh[j] >> k) & 1) << 4;
        out[k * 32 + j] = dl * float(q) - ml;
      }
    }
  }
}

void dequantize_q6_k(const uint8_t* src, float* dst, size_t n) {
  const size_t blocks = n / kQKK;
#pragma omp parallel for if (blocks > 512)
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* block = src + b * 210;
    const uint8_t* ql = block;
    const uint8_t* qh = block + 128;
    const int8_t* scales = reinterpret_cast<const int8_t*>(block + 192);
    const float d = load_f16(block + 208);
    float* out = dst + b * kQKK;
    // Two halves of 128 values: low 4 bits from 64 bytes (low nibbles, then high), high 2 bits
    // from 32 bytes at shifts 0, 2, 4, 6.
    for (size_t i = 0; i < kQKK; ++i) {
      const size_t half = i / 128, r = i % 128;
      const int low = (ql[half * 64 + r % 64] >> (4 * (r / 64))) & 0x0f;
      const int high = (qh[half * 32 + r % 32] >> (2 * (r / 32))) & 3;
      out[i] = (d * float(scales[i / 16])) * float((low | high << 4) - 32);
    }
  }
}

void dequantize_ggml(uint32_t type, const uint8_t* src, float* dst, size_t n) {
  switch (GgmlType(type)) {
    case GgmlType::F32: std::memcpy(dst, src, n * 4); return;
    // The source may be unaligned (GGUF alignment need not be a multiple of 2), hence memcpy.
    case GgmlType::F16:
      for (size_t i = 0; i < n; ++i) dst[i] = load_f16(src + 2 * i);
      return;
    case GgmlType::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    case GgmlType::Q8_0: dequantize_q8_0(src, dst, n); return;
    case GgmlType::Q4_0: dequantize_q4_0(src, dst, n); return;
    case GgmlType::Q4_1: dequantize_q4_1(src, dst, n); return;
    case GgmlType::Q5_0: dequantize_q5_0(src, dst, n); return;
    case GgmlType::Q5_1: dequantize_q5_1(src, dst, n); return;
    case GgmlType::Q2_K: dequantize_q2_k(src, dst, n); return;
    case GgmlType::Q3_K: dequantize_q3_k(src, dst, n); return;
    case GgmlType::Q4_K: dequantize_q4_k(src, dst, n); return;
    case GgmlType::Q5_K: dequantize_q5_k(src, dst, n); return;
    case GgmlType::Q6_K: dequantize_q6_k(src, dst, n); return;
  }
  QLORA_ASSERT(false, "dequantize_ggml: unsupported type {}", ggml_type_name(type));
}

}  // namespace qlora
