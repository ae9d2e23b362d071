// Block-wise 4-bit quantization, NF4 and FP4 (QLoRA section 3; bitsandbytes quantize_4bit /
// dequantize_4bit): per block of `block_size` values absmax = max|x|, codes = nearest code value
// of x / absmax (see codebooks.h for the exact rounding rule), two codes per byte, high nibble
// first; optional double quantization of the absmax constants (double_quant.h). Byte for byte the
// layout bitsandbytes writes (`weight` u8 + quant_state `absmax`, `nested_absmax`, ...).
// Tested in tests/quant/test_nf4.cpp and, against bitsandbytes, tests/quant/test_bnb_golden.cpp.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "quant/double_quant.h"
#include "core/quant_tensor.h"

namespace qlora {

// Throws Error on a block size other than 32, 64, ..., 4096 (bitsandbytes' set), on a non-finite
// input (naming the first bad element), or on an empty shape.
QuantTensor quantize_4bit(const float* x, const Shape& shape, QuantType type = QuantType::NF4,
                          int64_t block_size = 64, bool double_quant = false,
                          BnbRounding rounding = BnbRounding::Cuda);
QuantTensor quantize_4bit(const Tensor& x, QuantType type = QuantType::NF4, int64_t block_size = 64,
                          bool double_quant = false, BnbRounding rounding = BnbRounding::Cuda);

// The f32 absmax of each block (resolving double quantization).
std::vector<float> block_absmax(const QuantTensor& q);

// out (numel values) = code[nibble] * absmax[block], computed in f32 (then rounded to bf16, RNE).
void dequantize_4bit(const QuantTensor& q, float* out);
void dequantize_4bit_bf16(const QuantTensor& q, uint16_t* out);
Tensor dequantize_4bit(const QuantTensor& q, DType dtype = DType::F32);

std::string_view quant_type_name(QuantType type);  // "nf4", "fp4", "int4"
QuantType quant_type_from_name(std::string_view name);  // throws Error on anything else

}  // namespace qlora
