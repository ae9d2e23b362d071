// Code values of the quantized data types, bit for bit as bitsandbytes defines them: NF4 and FP4
// (4-bit, index = nibble) and the signed 8-bit dynamic map used for double quantization.
// Plus the rounding tables of bitsandbytes' two implementations (BnbRounding, double_quant.h):
// on the CPU a scaled value v in [-1, 1] takes the code whose sorted position is #{bounds < v},
// bounds being the f32 midpoints between neighbouring sorted code values (torch.bucketize(v,
// bounds), right=False: a value exactly on a midpoint takes the lower code); its CUDA kernels
// compare v with the thresholds of kernel_code_4bit. Tested in tests/quant/test_bnb_golden.cpp,
// test_bnb_real_weights.cpp and test_nf4.cpp.
#pragma once
#include <array>
#include <cstdint>

#include "backend/cpu/quantize.h"
#include "core/quant_tensor.h"

namespace qlora {

extern const std::array<float, 16> kNf4Code;       // get_4bit_type("nf4")
extern const std::array<float, 16> kFp4Code;       // get_4bit_type("fp4")
extern const std::array<float, 256> kDynamicCode;  // create_dynamic_map(signed=True)
extern const std::array<float, 16> kInt4Code;      // (i - 8) / 7: absmax int4; -8/7 is never chosen

const std::array<float, 16>& code_4bit(QuantType type);

// bitsandbytes.functional.create_dynamic_map(signed, max_exponent_bits=7, total_bits=8), derived
// the way it derives it (torch.linspace in f32, midpoints, f32 scaling by 10^-k, sorted). The
// signed map is kDynamicCode; the unsigned one holds 8-bit AdamW's second moment.
std::array<float, 256> create_dynamic_map(bool is_signed);
const std::array<float, 256>& dynamic_map_unsigned();  // create_dynamic_map(false), cached

// The rounding tables (sorted-code midpoints, backend/cpu/quantize.h's CodeBounds).
using cpu::CodeBounds;
const CodeBounds<16>& bounds_4bit(QuantType type);
const CodeBounds<256>& bounds_dynamic();
// The CUDA kernels' 4-bit rule (csrc/kernels.cu dQuantizeNF4 / dQuantizeFP4; INT4, ours, uses
// its midpoints). The trees' thresholds are decimal literals rounded to f32 as a C++ compiler
// rounds them: NF4's equal the f32 midpoints in 11 of 15 places and sit one ulp off in 4; FP4's
// are compared with |v| and differ from the midpoints by up to 14 ulp.
using cpu::KernelCode4;
const KernelCode4& kernel_code_4bit(QuantType type);
// bitsandbytes' CPU lookup table for 8-bit codes (BnbRounding::Cpu, double_quant.h).
const std::array<uint8_t, 65536>& bnb_cpu_lut();

// The code tables as host tensors: a QuantTensor's `code` (16) and `nested_code` (256).
Tensor code_4bit_tensor(QuantType type);
Tensor dynamic_code_tensor();

}  // namespace qlora
