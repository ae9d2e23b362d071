// GGML type table and dequantization kernels. Block layouts (ggml-common.h):
//   Q8_0: f16 d, int8 q[32]            -> x = d * q
//   Q4_0: f16 d, uint8 qs[16]          -> x[j] = d * ((qs[j] & 15) - 8), x[j+16] = d * ((qs[j] >> 4) - 8)
//   Q4_1: f16 d, f16 m, uint8 qs[16]   -> x[j] = d * (qs[j] & 15) + m,   x[j+16] = d * (qs[j] >> 4) + m
#include "io/ggml_dequant.h"

#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "io/gguf.h"

namespace qlora {
namespace {

constexpr size_t kQK = 32;  // elements per block of the *_0 / *_1 types

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
    case GgmlType::Q4_1: return true;
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
  }
  QLORA_ASSERT(false, "dequantize_ggml: unsupported type {}", ggml_type_name(type));
}

}  // namespace qlora
