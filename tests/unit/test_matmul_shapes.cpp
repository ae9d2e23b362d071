// cpu::matmul_xwt over the shapes that take its different paths — one row (sgemv for f32, AVX-512
// dots for bf16: decode), a few rows (bf16 dots), many rows (sgemm; bf16 widened in 256-row
// panels), K not a multiple of 32 (vector tails) — against a plain double loop, with the bias added
// by the Linear's add_bias kernel. Seeded random data.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backend/cpu/lora_ops.h"
#include "backend/cpu/matmul.h"
#include "core/rng.h"

using namespace qlora;

namespace {

// f32 results differ from the double reference only by summation order: K <= 512 terms of
// magnitude ~1 give errors ~1e-5 relative; 1e-4 leaves margin without hiding real bugs.
constexpr float kTol = 1e-4f;

std::vector<float> random_vector(size_t n, uint64_t seed, float scale = 1.0f) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = (rng.uniform() * 2.0f - 1.0f) * scale;
  return v;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// y (N, O) = x (N, K) · wᵀ + bias in double.
std::vector<float> reference_linear(const std::vector<float>& x, const std::vector<float>& w,
                                    const std::vector<float>& bias, int64_t N, int64_t O, int64_t K) {
  std::vector<float> y(size_t(N * O));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) {
      double s = bias.empty() ? 0.0 : bias[size_t(o)];
      for (int64_t k = 0; k < K; ++k) s += double(x[size_t(n * K + k)]) * w[size_t(o * K + k)];
      y[size_t(n * O + o)] = float(s);
    }
  return y;
}

}  // namespace

class MatmulShapes : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t>> {};

TEST_P(MatmulShapes, F32AndBf16MatchReference) {
  const auto [N, O, K] = GetParam();
  const uint64_t seed = uint64_t(N * 1000003 + O * 1009 + K);
  SCOPED_TRACE("seed " + std::to_string(seed));
  auto x = random_vector(size_t(N * K), seed);
  auto w = random_vector(size_t(O * K), seed + 1);
  auto bias = random_vector(size_t(O), seed + 2);
  std::vector<float> y(size_t(N * O));
  cpu::matmul_xwt<float>(x.data(), Tensor::from_vector(w, {O, K}), y.data(), N);
  cpu::add_bias<float>(Tensor::from_vector(bias, {O}), y.data(), N, O);
  EXPECT_LT(max_abs_diff(y, reference_linear(x, w, bias, N, O, K)), kTol);

  // bf16 weights: the reference uses the same bf16-rounded weights, so only summation order differs.
  Tensor w16 = Tensor::zeros({O, K}, DType::BF16);
  convert_f32_to_bf16(w.data(), w16.data<uint16_t>(), w.size());
  std::vector<float> w_rounded(w.size());
  convert_bf16_to_f32(w16.data<uint16_t>(), w_rounded.data(), w.size());
  cpu::matmul_xwt<float>(x.data(), w16, y.data(), N);
  EXPECT_LT(max_abs_diff(y, reference_linear(x, w_rounded, {}, N, O, K)), kTol);
}

INSTANTIATE_TEST_SUITE_P(Shapes, MatmulShapes,
                         ::testing::Values(std::make_tuple(1, 37, 64), std::make_tuple(1, 300, 70),
                                           std::make_tuple(3, 300, 70), std::make_tuple(17, 513, 96),
                                           std::make_tuple(64, 256, 512)));
