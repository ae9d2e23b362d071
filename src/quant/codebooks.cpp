// NF4, FP4 and 8-bit dynamic code values, tabulated bit for bit from bitsandbytes 0.50.2
// (functional.get_4bit_type and create_dynamic_map(signed=True)), written as hex floats so no
// decimal rounding stands between them and bitsandbytes. tests/quant/test_bnb_golden.cpp compares
// them with the tables bitsandbytes itself wrote into tests/quant/golden/quant_goldens.safetensors.
#include "quant/codebooks.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "core/error.h"

namespace qlora {

// get_4bit_type("nf4"): quantiles of N(0, 1) (QLoRA, Dettmers et al. 2023, appendix E), index = nibble.
const std::array<float, 16> kNf4Code = {
    -0x1.0p+0f, -0x1.647362p-1f, -0x1.0cd66p-1f, -0x1.94654p-2f,
    -0x1.23449ap-2f, -0x1.7a6a7ep-3f, -0x1.74f0e2p-4f, 0x0.0p+0f,
    0x1.45f5fep-4f, 0x1.4995c6p-3f, 0x1.f809bap-3f, 0x1.5a0674p-2f,
    0x1.c3497p-2f, 0x1.200f56p-1f, 0x1.722766p-1f, 0x1.0p+0f,
};

// get_4bit_type("fp4"): 1 sign, 2 exponent, 1 mantissa bit, bias 2; {0, 0.0625, 8, 12, 4, 6, 2, 3,
// -0, ...} / 12, index = nibble. Index 8 is +0.0: bitsandbytes writes "-0" as a Python int.
const std::array<float, 16> kFp4Code = {
    0x0.0p+0f, 0x1.555556p-8f, 0x1.555556p-1f, 0x1.0p+0f,
    0x1.555556p-2f, 0x1.0p-1f, 0x1.555556p-3f, 0x1.0p-2f,
    0x0.0p+0f, -0x1.555556p-8f, -0x1.555556p-1f, -0x1.0p+0f,
    -0x1.555556p-2f, -0x1.0p-1f, -0x1.555556p-3f, -0x1.0p-2f,
};

// create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), sorted ascending
// (Dettmers 2015, "8-Bit Approximations for Parallelism in Deep Learning").
const std::array<float, 256> kDynamicCode = {
    -0x1.fc6666p-1f, -0x1.f53334p-1f, -0x1.eep-1f, -0x1.e6ccccp-1f,
    -0x1.df999ap-1f, -0x1.d86666p-1f, -0x1.d13334p-1f, -0x1.cap-1f,
    -0x1.c2ccccp-1f, -0x1.bb999ap-1f, -0x1.b46666p-1f, -0x1.ad3334p-1f,
    -0x1.a6p-1f, -0x1.9eccccp-1f, -0x1.97999ap-1f, -0x1.906666p-1f,
    -0x1.893334p-1f, -0x1.82p-1f, -0x1.7accccp-1f, -0x1.73999ap-1f,
    -0x1.6c6668p-1f, -0x1.653334p-1f, -0x1.5ep-1f, -0x1.56ccccp-1f,
    -0x1.4f999ap-1f, -0x1.486668p-1f, -0x1.413334p-1f, -0x1.3ap-1f,
    -0x1.32ccccp-1f, -0x1.2b999ap-1f, -0x1.246668p-1f, -0x1.1d3334p-1f,
    -0x1.16p-1f, -0x1.0eccccp-1f, -0x1.079998p-1f, -0x1.006666p-1f,
    -0x1.f26664p-2f, -0x1.e4p-2f, -0x1.d59998p-2f, -0x1.c73334p-2f,
    -0x1.b8ccccp-2f, -0x1.aa6666p-2f, -0x1.9cp-2f, -0x1.8d9998p-2f,
    -0x1.7f3334p-2f, -0x1.70ccccp-2f, -0x1.626666p-2f, -0x1.54p-2f,
    -0x1.459998p-2f, -0x1.373334p-2f, -0x1.28ccccp-2f, -0x1.1a6668p-2f,
    -0x1.0cp-2f, -0x1.fb3332p-3f, -0x1.de6666p-3f, -0x1.c1999ap-3f,
    -0x1.a4ccccp-3f, -0x1.88p-3f, -0x1.6b3334p-3f, -0x1.4e6666p-3f,
    -0x1.31999ap-3f, -0x1.14ccccp-3f, -0x1.fp-4f, -0x1.b66668p-4f,
    -0x1.93d70ap-4f, -0x1.8851eep-4f, -0x1.7ccccep-4f, -0x1.7147aep-4f,
    -0x1.65c29p-4f, -0x1.5a3d7p-4f, -0x1.4eb854p-4f, -0x1.433334p-4f,
    -0x1.37ae14p-4f, -0x1.2c28f6p-4f, -0x1.20a3d6p-4f, -0x1.151ebap-4f,
    -0x1.09999ap-4f, -0x1.fc28f6p-5f, -0x1.e51ebap-5f, -0x1.ce147ap-5f,
    -0x1.b70a3ep-5f, -0x1.ap-5f, -0x1.88f5c2p-5f, -0x1.71eb86p-5f,
    -0x1.5ae146p-5f, -0x1.43d70ap-5f, -0x1.2ccccep-5f, -0x1.15c29p-5f,
    -0x1.fd70a4p-6f, -0x1.cf5c2ap-6f, -0x1.a147aep-6f, -0x1.733334p-6f,
    -0x1.451ebap-6f, -0x1.170a3ep-6f, -0x1.d1eb86p-7f, -0x1.75c29p-7f,
    -0x1.3e76c8p-7f, -0x1.2c083p-7f, -0x1.19999ap-7f, -0x1.072b02p-7f,
    -0x1.e978d4p-8f, -0x1.c49ba6p-8f, -0x1.9fbe76p-8f, -0x1.7ae148p-8f,
    -0x1.56041ap-8f, -0x1.3126e8p-8f, -0x1.0c49bap-8f, -0x1.ced914p-9f,
    -0x1.851eb8p-9f, -0x1.3b645ap-9f, -0x1.e353f8p-10f, -0x1.4fdf3ap-10f,
    -0x1.eecbfep-11f, -0x1.b3d07cp-11f, -0x1.78d5p-11f, -0x1.3dd982p-11f,
    -0x1.02de02p-11f, -0x1.8fc506p-12f, -0x1.19ce0ap-12f, -0x1.47ae16p-13f,
    -0x1.743e96p-14f, -0x1.15df66p-14f, -0x1.6f0068p-15f, -0x1.64840cp-16f,
    -0x1.040bfep-17f, -0x1.b43528p-19f, -0x1.27476ep-21f, 0x0.0p+0f,
    0x1.27476ep-21f, 0x1.b43528p-19f, 0x1.040bfep-17f, 0x1.64840cp-16f,
    0x1.6f0068p-15f, 0x1.15df66p-14f, 0x1.743e96p-14f, 0x1.47ae16p-13f,
    0x1.19ce0ap-12f, 0x1.8fc506p-12f, 0x1.02de02p-11f, 0x1.3dd982p-11f,
    0x1.78d5p-11f, 0x1.b3d07cp-11f, 0x1.eecbfep-11f, 0x1.4fdf3ap-10f,
    0x1.e353f8p-10f, 0x1.3b645ap-9f, 0x1.851eb8p-9f, 0x1.ced914p-9f,
    0x1.0c49bap-8f, 0x1.3126e8p-8f, 0x1.56041ap-8f, 0x1.7ae148p-8f,
    0x1.9fbe76p-8f, 0x1.c49ba6p-8f, 0x1.e978d4p-8f, 0x1.072b02p-7f,
    0x1.19999ap-7f, 0x1.2c083p-7f, 0x1.3e76c8p-7f, 0x1.75c29p-7f,
    0x1.d1eb86p-7f, 0x1.170a3ep-6f, 0x1.451ebap-6f, 0x1.733334p-6f,
    0x1.a147aep-6f, 0x1.cf5c2ap-6f, 0x1.fd70a4p-6f, 0x1.15c29p-5f,
    0x1.2ccccep-5f, 0x1.43d70ap-5f, 0x1.5ae146p-5f, 0x1.71eb86p-5f,
    0x1.88f5c2p-5f, 0x1.ap-5f, 0x1.b70a3ep-5f, 0x1.ce147ap-5f,
    0x1.e51ebap-5f, 0x1.fc28f6p-5f, 0x1.09999ap-4f, 0x1.151ebap-4f,
    0x1.20a3d6p-4f, 0x1.2c28f6p-4f, 0x1.37ae14p-4f, 0x1.433334p-4f,
    0x1.4eb854p-4f, 0x1.5a3d7p-4f, 0x1.65c29p-4f, 0x1.7147aep-4f,
    0x1.7ccccep-4f, 0x1.8851eep-4f, 0x1.93d70ap-4f, 0x1.b66668p-4f,
    0x1.fp-4f, 0x1.14ccccp-3f, 0x1.31999ap-3f, 0x1.4e6666p-3f,
    0x1.6b3334p-3f, 0x1.88p-3f, 0x1.a4ccccp-3f, 0x1.c1999ap-3f,
    0x1.de6666p-3f, 0x1.fb3332p-3f, 0x1.0cp-2f, 0x1.1a6668p-2f,
    0x1.28ccccp-2f, 0x1.373334p-2f, 0x1.459998p-2f, 0x1.54p-2f,
    0x1.626666p-2f, 0x1.70ccccp-2f, 0x1.7f3334p-2f, 0x1.8d9998p-2f,
    0x1.9cp-2f, 0x1.aa6666p-2f, 0x1.b8ccccp-2f, 0x1.c73334p-2f,
    0x1.d59998p-2f, 0x1.e4p-2f, 0x1.f26664p-2f, 0x1.006666p-1f,
    0x1.079998p-1f, 0x1.0eccccp-1f, 0x1.16p-1f, 0x1.1d3334p-1f,
    0x1.246668p-1f, 0x1.2b999ap-1f, 0x1.32ccccp-1f, 0x1.3ap-1f,
    0x1.413334p-1f, 0x1.486668p-1f, 0x1.4f999ap-1f, 0x1.56ccccp-1f,
    0x1.5ep-1f, 0x1.653334p-1f, 0x1.6c6668p-1f, 0x1.73999ap-1f,
    0x1.7accccp-1f, 0x1.82p-1f, 0x1.893334p-1f, 0x1.906666p-1f,
    0x1.97999ap-1f, 0x1.9eccccp-1f, 0x1.a6p-1f, 0x1.ad3334p-1f,
    0x1.b46666p-1f, 0x1.bb999ap-1f, 0x1.c2ccccp-1f, 0x1.cap-1f,
    0x1.d13334p-1f, 0x1.d86666p-1f, 0x1.df999ap-1f, 0x1.e6ccccp-1f,
    0x1.eep-1f, 0x1.f53334p-1f, 0x1.fc6666p-1f, 0x1.0p+0f,
};

const std::array<float, 16> kInt4Code = [] {
  std::array<float, 16> code{};
  for (int i = 0; i < 16; ++i) code[size_t(i)] = float(i - 8) / 7.0f;
  return code;
}();

const std::array<float, 16>& code_4bit(QuantType type) {
  switch (type) {
    case QuantType::NF4: return kNf4Code;
    case QuantType::FP4: return kFp4Code;
    case QuantType::INT4: return kInt4Code;
  }
  return kNf4Code;
}

namespace {

CodeBounds<16> make_bounds_4bit(const std::array<float, 16>& code) {
  // As bitsandbytes' quantize_4bit: argsort the code (ties keep index order, as torch.argsort
  // does on CPU for FP4's two zeros), bounds = f32 midpoints of neighbours.
  CodeBounds<16> b;
  for (int i = 0; i < 16; ++i) b.order[i] = uint8_t(i);
  std::stable_sort(b.order.begin(), b.order.end(), [&](uint8_t x, uint8_t y) { return code[x] < code[y]; });
  for (int i = 0; i < 15; ++i) b.bounds[i] = (code[b.order[i]] + code[b.order[i + 1]]) / 2.0f;
  return b;
}

CodeBounds<256> make_bounds_dynamic() {
  CodeBounds<256> b;
  for (int i = 0; i < 256; ++i) b.order[i] = uint8_t(i);  // already sorted
  for (int i = 0; i < 255; ++i) b.bounds[i] = (kDynamicCode[i] + kDynamicCode[i + 1]) / 2.0f;
  return b;
}

}  // namespace

const CodeBounds<16>& bounds_4bit(QuantType type) {
  static const CodeBounds<16> nf4 = make_bounds_4bit(kNf4Code);
  static const CodeBounds<16> fp4 = make_bounds_4bit(kFp4Code);
  static const CodeBounds<16> int4 = make_bounds_4bit(kInt4Code);
  switch (type) {
    case QuantType::NF4: return nf4;
    case QuantType::FP4: return fp4;
    case QuantType::INT4: return int4;
  }
  return nf4;
}

const CodeBounds<256>& bounds_dynamic() {
  static const CodeBounds<256> b = make_bounds_dynamic();
  return b;
}

const KernelCode4& kernel_code_4bit(QuantType type) {
  static const KernelCode4 nf4 = [] {
    // dQuantizeNF4's tree, its thresholds in ascending order (decimal literals of the kernel,
    // rounded to f32 as nvcc rounds them); the code index is the count of thresholds below v.
    static constexpr float t[15] = {
        -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
        -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
        0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
        0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f};
    KernelCode4 k;
    for (int i = 0; i < 15; ++i) k.bounds.bounds[size_t(i)] = t[i];
    for (int i = 0; i < 16; ++i) k.bounds.order[size_t(i)] = uint8_t(i);
    return k;
  }();
  static const KernelCode4 fp4 = [] {
    // dQuantizeFP4: bit 3 is the sign (v < 0); |v| against the tree's thresholds, ascending, picks
    // the magnitude code 0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011 (0 .. 1 in value).
    static constexpr float t[7] = {0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f,
                                   0.4166667f,  0.583333f,  0.8333333f};
    static constexpr uint8_t magnitude_order[8] = {0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011};
    KernelCode4 k;
    k.sign_magnitude = true;
    for (int i = 0; i < 7; ++i) k.magnitude.bounds[size_t(i)] = t[i];
    for (int i = 0; i < 8; ++i) k.magnitude.order[size_t(i)] = magnitude_order[i];
    return k;
  }();
  static const KernelCode4 int4 = [] {
    KernelCode4 k;
    k.bounds = bounds_4bit(QuantType::INT4);
    return k;
  }();
  switch (type) {
    case QuantType::NF4: return nf4;
    case QuantType::FP4: return fp4;
    case QuantType::INT4: return int4;
  }
  return nf4;
}

const std::array<uint8_t, 65536>& bnb_cpu_lut() {
  // bitsandbytes csrc/cpu_ops.cpp build_quantize_lut: for each of 65536 points spread over [-1, 1],
  // the first sorted code whose upper midpoint is not below the point.
  static const auto lut = [] {
    constexpr int kLutSize = 65536;
    auto t = std::make_unique<std::array<uint8_t, kLutSize>>();
    float mid[255];
    for (int i = 0; i < 255; ++i) mid[i] = 0.5f * (kDynamicCode[i] + kDynamicCode[i + 1]);
    int c = 0;
    for (int i = 0; i < kLutSize; ++i) {
      const float val = -1.0f + (2.0f * float(i)) / float(kLutSize - 1);
      while (c < 255 && mid[c] < val) ++c;
      (*t)[size_t(i)] = uint8_t(c);
    }
    return t;
  }();
  return *lut;
}

Tensor code_4bit_tensor(QuantType type) {
  const std::array<float, 16>& code = code_4bit(type);
  return Tensor::from_vector(std::vector<float>(code.begin(), code.end()), {16});
}

Tensor dynamic_code_tensor() {
  return Tensor::from_vector(std::vector<float>(kDynamicCode.begin(), kDynamicCode.end()), {256});
}

}  // namespace qlora
