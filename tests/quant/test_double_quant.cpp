// Code tables (src/quant/codebooks.h) and double quantization of absmax constants
// (src/quant/double_quant.h): table properties, the midpoint tie rule, the 8-bit dynamic map's
// round trip, the mean offset, and the two 8-bit rounding modes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "quant/codebooks.h"
#include "quant/double_quant.h"
#include "quant/nf4.h"
#include "quant_test_util.h"

namespace qlora {
namespace {

TEST(Codebooks, Nf4IsSortedSymmetricRangeWithExactZero) {
  EXPECT_EQ(kNf4Code[0], -1.0f);
  EXPECT_EQ(kNf4Code[7], 0.0f);
  EXPECT_EQ(kNf4Code[15], 1.0f);
  EXPECT_TRUE(std::is_sorted(kNf4Code.begin(), kNf4Code.end()));
  // QLoRA appendix E (rounded to 4 decimals there).
  EXPECT_NEAR(kNf4Code[1], -0.6962f, 1e-4f);
  EXPECT_NEAR(kNf4Code[14], 0.7230f, 1e-4f);
  EXPECT_NEAR(kNf4Code[8], 0.0796f, 1e-4f);
}

TEST(Codebooks, Fp4IsSignMagnitudeOverTwelve) {
  const float mag[8] = {0.0f, 0.0625f, 8.0f, 12.0f, 4.0f, 6.0f, 2.0f, 3.0f};
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(kFp4Code[size_t(i)], mag[i] / 12.0f) << i;
    EXPECT_EQ(kFp4Code[size_t(i + 8)], -mag[i] / 12.0f) << i;
  }
}

TEST(Codebooks, DynamicMapIsSortedWithZeroAndOne) {
  EXPECT_TRUE(std::is_sorted(kDynamicCode.begin(), kDynamicCode.end()));
  EXPECT_EQ(std::adjacent_find(kDynamicCode.begin(), kDynamicCode.end()), kDynamicCode.end());  // distinct
  EXPECT_EQ(kDynamicCode[127], 0.0f);
  EXPECT_EQ(kDynamicCode[255], 1.0f);
  EXPECT_NEAR(kDynamicCode[0], -0.99297f, 1e-5f);  // no -1: the signed map tops out below 1 in magnitude
  EXPECT_NEAR(kDynamicCode[128], 5.5e-7f, 1e-12f);  // smallest positive: 1e-6 * (0.1 + 1) / 2
}

TEST(Codebooks, MidpointTiesTakeTheLowerCode) {
  const CodeBounds<16>& nf4 = bounds_4bit(QuantType::NF4);
  for (int i = 0; i < 15; ++i) {
    const float m = nf4.bounds[size_t(i)];
    EXPECT_EQ(m, (kNf4Code[size_t(i)] + kNf4Code[size_t(i + 1)]) / 2.0f);
    EXPECT_EQ(nf4.encode(m), i);
    EXPECT_EQ(nf4.encode(std::nextafter(m, 2.0f)), i + 1);
    EXPECT_EQ(nf4.encode(std::nextafter(m, -2.0f)), i);
  }
  // FP4: sorted order interleaves sign and magnitude; 0.0 maps to code 0 and a tiny positive value
  // to code 8 (the second zero), exactly as bitsandbytes' argsort-and-bucketize does.
  const CodeBounds<16>& fp4 = bounds_4bit(QuantType::FP4);
  EXPECT_EQ(fp4.encode(0.0f), 0);
  EXPECT_EQ(fp4.encode(1e-4f), 8);
  EXPECT_EQ(fp4.encode(-1e-4f), 0);
  EXPECT_EQ(fp4.encode(1.0f), 3);
  EXPECT_EQ(fp4.encode(-1.0f), 11);
  EXPECT_EQ(fp4.encode(0.3f), 4);   // nearest 1/3
  EXPECT_EQ(fp4.encode(-0.2f), 14); // nearest -1/6
}

// The CUDA kernels' 4-bit trees (kernel_code_4bit). NF4's thresholds are decimal literals of the
// midpoints: 11 of 15 round to the f32 midpoint itself, 4 to its neighbour one ulp away, so NF4
// codes differ between the rules only in those 4 one-ulp slivers (and where the scaling differs).
// FP4's are coarser constants compared with |v|: the rules differ in slivers of up to 14 ulp next
// to each midpoint and in which of the two zeros a tiny value takes.
TEST(Codebooks, KernelTreesAgainstTheMidpoints) {
  const KernelCode4& nf4 = kernel_code_4bit(QuantType::NF4);
  int one_ulp = 0;
  for (int i = 0; i < 15; ++i) {
    const float k = nf4.bounds.bounds[size_t(i)], m = bounds_4bit(QuantType::NF4).bounds[size_t(i)];
    if (k == m) continue;
    ++one_ulp;
    EXPECT_TRUE(k == std::nextafter(m, 2.0f) || k == std::nextafter(m, -2.0f)) << "threshold " << i;
    // The value between them takes different codes under the two rules.
    const float between = std::max(k, m);
    EXPECT_NE(nf4.encode(between), bounds_4bit(QuantType::NF4).encode(between)) << "threshold " << i;
  }
  EXPECT_EQ(one_ulp, 4);  // thresholds 0, 8, 12 and 14
  for (int i = 0; i < 16; ++i) EXPECT_EQ(nf4.encode(kNf4Code[size_t(i)]), i);

  const KernelCode4& fp4 = kernel_code_4bit(QuantType::FP4);
  const CodeBounds<16>& mid = bounds_4bit(QuantType::FP4);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(kFp4Code[fp4.encode(kFp4Code[size_t(i)])], kFp4Code[size_t(i)]) << i;
  EXPECT_EQ(fp4.encode(1e-4f), 0);   // the kernel: +0 for a tiny positive value, -0 for a negative
  EXPECT_EQ(fp4.encode(-1e-4f), 8);
  EXPECT_EQ(mid.encode(1e-4f), 8);   // the CPU's argsort-and-bucketize: the other way round
  EXPECT_EQ(mid.encode(-1e-4f), 0);
  EXPECT_EQ(fp4.encode(std::nanf("")), 0);
  EXPECT_EQ(fp4.encode(-1e-40f), 0);  // a denormal flushes to zero in the kernel: + sign
  EXPECT_EQ(fp4.encode(-std::numeric_limits<float>::min()), 8);
  // Between the kernel's 0.583333 and the f32 midpoint of 1/2 and 2/3 (0.58333337): 2/3 on a GPU,
  // 1/2 on the CPU.
  const float sliver = 0.5833332f;
  EXPECT_EQ(kFp4Code[fp4.encode(sliver)], kFp4Code[2]);
  EXPECT_EQ(kFp4Code[mid.encode(sliver)], kFp4Code[5]);
  EXPECT_EQ(kFp4Code[fp4.encode(-sliver)], kFp4Code[10]);
  // A tie on a kernel threshold keeps the smaller magnitude, for either sign.
  EXPECT_EQ(kFp4Code[fp4.encode(0.0859375f)], kFp4Code[1]);
  EXPECT_EQ(kFp4Code[fp4.encode(-0.0859375f)], kFp4Code[9]);
  EXPECT_EQ(kFp4Code[mid.encode(-0.0859375f)], -1.0f / 6.0f);  // bucketize: the lower, larger magnitude
}

// Zero blocks and partial blocks, the two places where the rules scale differently.
TEST(Codebooks, KernelRuleOnZeroAndPartialBlocks) {
  std::vector<float> zeros(64, 0.0f);
  QuantTensor cuda = quantize_4bit(zeros.data(), {64}, QuantType::NF4, 64, false, BnbRounding::Cuda);
  QuantTensor cpu_rule = quantize_4bit(zeros.data(), {64}, QuantType::NF4, 64, false, BnbRounding::Cpu);
  EXPECT_EQ(cuda.codes.data<uint8_t>()[0], 0x00);  // NaN: every comparison false
  EXPECT_EQ(cpu_rule.codes.data<uint8_t>()[0], 0x77);  // 0 / 1e-38 = 0: the code of 0.0
  EXPECT_EQ(dequantize_4bit(cuda).data<float>()[5], 0.0f);
  // A partial last block: the kernel multiplies by 1 / absmax, the CPU divides. Where the two
  // roundings of a value land on either side of an NF4 midpoint, each rule keeps its own side.
  int found = 0;
  for (float am : {3.0f, 7.0f, 11.0f, 13.0f, 0.3f}) {
    const float inv = 1.0f / am;
    for (int k = 0; k < 15; ++k) {
      const float m = bounds_4bit(QuantType::NF4).bounds[size_t(k)];
      const float t = kernel_code_4bit(QuantType::NF4).bounds.bounds[size_t(k)];
      float y = m * am;
      for (int step = 0; step < 8; ++step) y = std::nextafter(y, 0.0f);
      for (int step = 0; step < 16; ++step, y = std::nextafter(y, 2.0f * am)) {
        const bool cuda_above = y * inv > t, cpu_above = y / am > m;
        if (cuda_above == cpu_above) continue;
        const float block[3] = {am, y, 0.0f};  // 3 values in blocks of 64: one partial block
        const QuantTensor a = quantize_4bit(block, {3}, QuantType::NF4, 64, false, BnbRounding::Cuda);
        const QuantTensor c = quantize_4bit(block, {3}, QuantType::NF4, 64, false, BnbRounding::Cpu);
        EXPECT_EQ(a.codes.data<uint8_t>()[0] & 0x0f, cuda_above ? k + 1 : k) << "am " << am << " y " << y;
        EXPECT_EQ(c.codes.data<uint8_t>()[0] & 0x0f, cpu_above ? k + 1 : k) << "am " << am << " y " << y;
        ++found;
      }
    }
  }
  EXPECT_GT(found, 0);  // x * (1/a) and x / a do differ by an ulp for some of these
}

TEST(DoubleQuant, BlockwiseDynamicRoundTrip) {
  const std::vector<float> x = test::normal_data(1000, 21);
  std::vector<uint8_t> codes(x.size());
  std::vector<float> absmax(4), y(x.size());
  quantize_blockwise_8bit(x.data(), 1000, 256, codes.data(), absmax.data());
  dequantize_blockwise_8bit(codes.data(), absmax.data(), 1000, 256, y.data());
  for (size_t i = 0; i < x.size(); ++i) {
    // Nearest code: the error is at most half the widest code gap, (1 - 0.1) / 64 / 2 = 0.00703
    // relative to absmax (the 64 linear steps between 0.1 and 1).
    EXPECT_LE(std::fabs(x[i] - y[i]), absmax[i / 256] * 0.0071f) << i;
  }
}

TEST(DoubleQuant, OffsetIsMeanAndAbsmaxComesBack) {
  // Absmax of N(0, 0.02) blocks of 64: all near 0.05; 600 values -> 3 nested blocks (last partial).
  std::vector<float> absmax = test::normal_data(600, 22, 0.005f);
  for (float& a : absmax) a = 0.05f + std::fabs(a);
  DoubleQuantized dq = double_quantize(absmax);
  double mean = 0.0;
  for (float a : absmax) mean += a;
  mean /= 600.0;
  EXPECT_NEAR(dq.offset, mean, 1e-7);
  EXPECT_EQ(dq.codes.size(), 600u);
  EXPECT_EQ(dq.nested_absmax.size(), 3u);
  std::vector<float> back = double_dequantize(dq.codes, dq.nested_absmax, dq.offset);
  for (size_t i = 0; i < absmax.size(); ++i) {
    // Half a code gap of the centred value, relative to the nested absmax (<= 0.71%).
    EXPECT_NEAR(back[i], absmax[i], dq.nested_absmax[i / 256] * 0.0071f + 1e-7f) << i;
  }
  EXPECT_THROW(double_dequantize(dq.codes, {1.0f}, 0.0f), Error);
}

TEST(DoubleQuant, AbsmaxMeanEmulatesTorchsCascadedF32Sum) {
  // A sum where naive left-to-right f32 accumulation loses the small terms: torch's lane-wise
  // cascade keeps more of them; double precision keeps all. Ours must be torch's, bit for bit
  // (the golden file checks the bits against torch); here: close to the exact mean.
  std::vector<float> v(5000, 1e-4f);
  v[0] = 1000.0f;
  const double exact = (1000.0 + 4999 * double(1e-4f)) / 5000.0;
  EXPECT_NEAR(absmax_mean(v.data(), 5000), exact, exact * 1e-6);
  EXPECT_EQ(absmax_mean(v.data(), 0), 0.0f);
  const float three[3] = {1.0f, 2.0f, 4.0f};
  EXPECT_EQ(absmax_mean(three, 3), 7.0f / 3.0f);
}

TEST(DoubleQuant, BnbCpuLutDiffersOnlyNearZero) {
  // bitsandbytes' CPU lookup table snaps |v| < ~1.5e-5 to the codes at +-2.1e-5; elsewhere it is
  // the nearest code except for values on the edge of one of its 65536 cells.
  std::vector<float> x = test::normal_data(4096, 23);
  for (size_t i = 0; i < x.size(); i += 7) x[i] *= 1e-6f;  // some tiny values
  std::vector<uint8_t> exact(x.size()), lut(x.size());
  std::vector<float> a1(16), a2(16);
  quantize_blockwise_8bit(x.data(), 4096, 256, exact.data(), a1.data(), BnbRounding::Cuda);
  quantize_blockwise_8bit(x.data(), 4096, 256, lut.data(), a2.data(), BnbRounding::Cpu);
  EXPECT_EQ(a1, a2);
  int differ = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (exact[i] == lut[i]) continue;
    ++differ;
    const float v = x[i] / a1[i / 256];
    float to_mid = 1.0f;  // distance to the nearest rounding boundary
    for (float m : bounds_dynamic().bounds) to_mid = std::min(to_mid, std::fabs(v - m));
    EXPECT_TRUE(std::fabs(v) < 1e-3f || to_mid <= 2.0f / 65535.0f) << i << " v=" << v;
  }
  EXPECT_GT(differ, 0);  // the tiny values do differ
  // A zero block writes code 0 in both: the CPU kernel by a test, the CUDA kernel because 0 * (1/0)
  // is NaN, which its bisection sends to index 0.
  std::vector<float> zeros(256, 0.0f);
  quantize_blockwise_8bit(zeros.data(), 256, 256, lut.data(), a2.data(), BnbRounding::Cpu);
  quantize_blockwise_8bit(zeros.data(), 256, 256, exact.data(), a1.data(), BnbRounding::Cuda);
  EXPECT_EQ(lut[0], 0);
  EXPECT_EQ(exact[0], 0);
  EXPECT_EQ(a1[0], 0.0f);
}

// The CUDA kernel's bisection is the nearest code by f32 midpoints: it agrees with the midpoint
// search everywhere except exactly on a midpoint, where it keeps its final pivot, the upper code
// for some midpoints and the lower for others.
TEST(DoubleQuant, KernelBisectionIsNearestWithPathDependentTies) {
  const CodeBounds<256>& b = bounds_dynamic();
  std::vector<float> v = test::normal_data(20000, 31);
  for (float& x : v) x = std::clamp(x / 3.0f, -1.0f, 1.0f);
  for (int i = 0; i < 256; ++i) v.push_back(kDynamicCode[size_t(i)]);
  for (float m : b.bounds)
    for (float x : {std::nextafter(m, -2.0f), std::nextafter(m, 2.0f)}) v.push_back(x);
  v.push_back(-1.0f), v.push_back(1.0f), v.push_back(-1.5f), v.push_back(1.5f);
  for (float x : v) {
    const uint8_t expected = b.encode(std::clamp(x, -1.0f, 1.0f));
    ASSERT_EQ(int(cpu::kernel_code_8bit(kDynamicCode.data(), x)), int(expected)) << "v=" << x;
  }
  int upper = 0, lower = 0;
  for (int i = 0; i < 255; ++i) {
    const int k = cpu::kernel_code_8bit(kDynamicCode.data(), b.bounds[size_t(i)]);
    ASSERT_TRUE(k == i || k == i + 1) << "midpoint " << i;
    (k == i ? lower : upper) += 1;
  }
  EXPECT_GT(upper, 0);  // unlike torch.bucketize, which always takes the lower code
  EXPECT_GT(lower, 0);
  std::printf("[kernel bisection] of 255 exact midpoints, %d take the upper code, %d the lower\n", upper, lower);
}

}  // namespace
}  // namespace qlora
