// Absmax int8 quantization (src/quant/int8.h): the worked example from the QLoRA seed notes
// (absmax 10.2, c = 127 / 10.2 = 12.4509), block-wise quantization, round trip and errors.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "quant/int8.h"
#include "quant_test_util.h"

namespace qlora {
namespace {

// ../shared/seeds QLoRA notes: X_int8 = round(127 / absmax(X) * X), with absmax(X) = 10.2 so
// c = 127 / 10.2 = 12.4509. The values are ours; the expected codes are c * x rounded by hand:
//   1.2 -> 14.941 -> 15, -0.5 -> -6.225 -> -6, -4.3 -> -53.539 -> -54, 3.1 -> 38.598 -> 39,
//   0.8 -> 9.961 -> 10, 2.4 -> 29.882 -> 30, 5.4 -> 67.235 -> 67, -10.2 -> -127, 0 -> 0.
TEST(Int8, SeedWorkedExample) {
  const std::vector<float> x = {1.2f, -0.5f, -4.3f, 3.1f, 0.8f, 2.4f, 5.4f, -10.2f, 0.0f};
  const float c = int8_scale(10.2f);
  // The seed prints 12.4509: 127 / 10.2 = 12.450980..., truncated to four decimals.
  EXPECT_EQ(std::floor(double(c) * 1e4) / 1e4, 12.4509);
  EXPECT_NEAR(c, 12.450980f, 2e-6f);
  Int8Quantized q = quantize_int8(x.data(), int64_t(x.size()));
  ASSERT_EQ(q.absmax.size(), 1u);
  EXPECT_EQ(q.absmax[0], 10.2f);
  const std::vector<int8_t> expected = {15, -6, -54, 39, 10, 30, 67, -127, 0};
  EXPECT_EQ(q.values, expected);
  // Dequantized: x_int8 / c, within half a step (absmax / 254) of x.
  std::vector<float> back(x.size());
  dequantize_int8(q, back.data());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(back[i], x[i], 10.2f / 254.0f + 1e-6f) << i;
  EXPECT_FLOAT_EQ(back[7], -10.2f);
}

TEST(Int8, RoundsHalfToEvenLikeTorch) {
  // absmax 127 makes c = 1, so the codes are the inputs rounded: 2.5 -> 2, 3.5 -> 4, -0.5 -> -0.
  const std::vector<float> x = {127.0f, 2.5f, 3.5f, -0.5f, -1.5f};
  Int8Quantized q = quantize_int8(x.data(), int64_t(x.size()));
  EXPECT_EQ(q.values, (std::vector<int8_t>{127, 2, 4, 0, -2}));
}

TEST(Int8, BlockwiseUsesOneAbsmaxPerBlockAndHandlesZeroAndPartialBlocks) {
  std::vector<float> x = test::normal_data(1000, 11);
  for (int i = 64; i < 128; ++i) x[size_t(i)] = 0.0f;  // block 1 is all zeros
  Int8Quantized q = quantize_int8_blockwise(x.data(), int64_t(x.size()), 64);
  ASSERT_EQ(q.absmax.size(), 16u);  // 15 full blocks + 40 values
  EXPECT_EQ(q.absmax[1], 0.0f);
  std::vector<float> back(x.size());
  dequantize_int8(q, back.data());
  for (size_t i = 0; i < x.size(); ++i) {
    const float am = q.absmax[i / 64];
    EXPECT_NEAR(back[i], x[i], am / 254.0f * 1.0001f + 1e-7f) << i;  // half a step, plus f32 slack
    if (i >= 64 && i < 128) {
      EXPECT_EQ(q.values[i], 0);
    }
  }
  // Every block's max maps to +-127.
  for (size_t b = 0; b < q.absmax.size(); ++b) {
    if (q.absmax[b] == 0.0f) continue;
    int m = 0;
    for (size_t i = b * 64; i < std::min(x.size(), b * 64 + 64); ++i) m = std::max(m, std::abs(int(q.values[i])));
    EXPECT_EQ(m, 127) << b;
  }
}

TEST(Int8, RejectsNonFiniteInputAndBadBlock) {
  std::vector<float> x = {1.0f, NAN, 2.0f};
  try {
    quantize_int8(x.data(), 3);
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("element 1 is NaN"), std::string::npos) << e.what();
  }
  x[1] = INFINITY;
  EXPECT_THROW(quantize_int8(x.data(), 3), Error);
  EXPECT_THROW(quantize_int8_blockwise(x.data(), 3, 0), Error);
}

}  // namespace
}  // namespace qlora
