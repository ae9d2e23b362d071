// NF4 / FP4 block-wise quantization, following bitsandbytes' quantize_4bit (backends/default/ops.py,
// the path bitsandbytes takes on CPU) and dequantize_4bit: validation, layout and double
// quantization here; the block loops are backend/cpu/quantize.h's kernels. See nf4.h.
#include "quant/nf4.h"

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
  if (!q.on_host())
    fail("quant", "dequantize_4bit: {} lives on {}; dequantize it through its backend", shape_str(q.shape),
         q.device().name());
  if (!q.codes.defined() || q.codes.numel() != (n + 1) / 2)
    fail("quant", "dequantize_4bit: {} holds {} code bytes; expected {}", shape_str(q.shape),
         q.codes.defined() ? q.codes.numel() : 0, (n + 1) / 2);
  const Tensor& consts = q.double_quant ? q.absmax_codes : q.absmax;
  if (!consts.defined() || consts.numel() != q.n_blocks())
    fail("quant", "dequantize_4bit: {} with block {} needs {} absmax values; got {}", shape_str(q.shape),
         q.block_size, q.n_blocks(), consts.defined() ? consts.numel() : 0);
}

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
                          BnbRounding rounding) {
  check_block_size(block_size);
  const int64_t n = shape_numel(shape);
  if (shape.empty() || n <= 0)
    fail("quant", "quantize_4bit: expected a non-empty tensor, got shape {}", shape_str(shape));
  check_finite(x, n);

  QuantTensor q;
  q.type = type;
  q.shape = shape;
  q.block_size = block_size;
  q.code = code_4bit_tensor(type);
  const int64_t n_blocks = q.n_blocks();
  std::vector<float> absmax(size_t(n_blocks), 0.0f);
  q.codes = Tensor::zeros({(n + 1) / 2}, DType::U8);
  if (rounding == BnbRounding::Cuda)
    cpu::quantize_blocks_4bit_kernel(x, n, block_size, kernel_code_4bit(type), q.codes.data<uint8_t>(), absmax.data());
  else
    cpu::quantize_blocks_4bit(x, n, block_size, bounds_4bit(type), q.codes.data<uint8_t>(), absmax.data());

  if (double_quant) {
    const DoubleQuantized dq = double_quantize(absmax, rounding);
    q.double_quant = true;
    q.absmax_codes = Tensor::zeros({n_blocks}, DType::U8);
    std::copy(dq.codes.begin(), dq.codes.end(), q.absmax_codes.data<uint8_t>());
    q.nested_absmax = Tensor::from_vector(dq.nested_absmax, {int64_t(dq.nested_absmax.size())});
    q.nested_code = dynamic_code_tensor();
    q.nested_block_size = dq.nested_block_size;
    q.offset = dq.offset;
  } else {
    q.absmax = Tensor::from_vector(absmax, {n_blocks});
  }
  return q;
}

QuantTensor quantize_4bit(const Tensor& x, QuantType type, int64_t block_size, bool double_quant, BnbRounding rounding) {
  if (x.dtype() == DType::F32)
    return quantize_4bit(x.data<float>(), x.shape(), type, block_size, double_quant, rounding);
  Tensor f = x.to(DType::F32);
  return quantize_4bit(f.data<float>(), f.shape(), type, block_size, double_quant, rounding);
}

std::vector<float> block_absmax(const QuantTensor& q) {
  check_layout(q);
  if (!q.double_quant) {
    const float* a = q.absmax.data<float>();
    return std::vector<float>(a, a + q.absmax.numel());
  }
  const uint8_t* c = q.absmax_codes.data<uint8_t>();
  const float* nested = q.nested_absmax.data<float>();
  return double_dequantize(std::vector<uint8_t>(c, c + q.absmax_codes.numel()),
                           std::vector<float>(nested, nested + q.nested_absmax.numel()), q.offset,
                           q.nested_block_size);
}

void dequantize_4bit(const QuantTensor& q, float* out) {
  const std::vector<float> absmax = block_absmax(q);
  cpu::dequantize_blocks_4bit(q.codes.data<uint8_t>(), absmax.data(), code_4bit(q.type).data(), q.numel(),
                              q.block_size, out);
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
