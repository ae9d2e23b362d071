// Code tables (src/quant/codebooks.h) and double quantization of absmax constants
// (src/quant/double_quant.h): table properties, the midpoint tie rule, the 8-bit dynamic map's
// round trip, the mean offset, and the two 8-bit rounding modes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "quant/codebooks.h"
#include "quant/double_quant.h"
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
  quantize_blockwise_8bit(x.data(), 4096, 256, exact.data(), a1.data(), Rounding8::Nearest);
  quantize_blockwise_8bit(x.data(), 4096, 256, lut.data(), a2.data(), Rounding8::BnbCpuLut);
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
  // A zero block: code 0 from the lookup-table path (as bitsandbytes' CPU kernel), code of 0.0 otherwise.
  std::vector<float> zeros(256, 0.0f);
  quantize_blockwise_8bit(zeros.data(), 256, 256, lut.data(), a2.data(), Rounding8::BnbCpuLut);
  quantize_blockwise_8bit(zeros.data(), 256, 256, exact.data(), a1.data(), Rounding8::Nearest);
  EXPECT_EQ(lut[0], 0);
  EXPECT_EQ(exact[0], 127);
  EXPECT_EQ(a1[0], 0.0f);
}

}  // namespace
}  // namespace qlora
