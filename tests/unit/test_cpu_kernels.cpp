// CPU kernels vs plain-loop references on seeded random data: linear (f32, bf16; small and large
// M, with bias), RMSNorm, RoPE, causal GQA attention, SwiGLU, embedding.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backend/cpu/attention.h"
#include "backend/cpu/linear.h"
#include "backend/cpu/ops.h"
#include "core/error.h"
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

std::vector<float> reference_linear(const std::vector<float>& x, const std::vector<float>& w,
                                    const std::vector<float>& bias, int64_t M, int64_t N, int64_t K) {
  std::vector<float> y(size_t(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = bias.empty() ? 0.0 : bias[size_t(n)];
      for (int64_t k = 0; k < K; ++k) s += double(x[size_t(m * K + k)]) * w[size_t(n * K + k)];
      y[size_t(m * N + n)] = float(s);
    }
  return y;
}

}  // namespace

class LinearTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t>> {};

TEST_P(LinearTest, F32AndBf16MatchReference) {
  const auto [M, N, K] = GetParam();
  const uint64_t seed = uint64_t(M * 1000003 + N * 1009 + K);
  SCOPED_TRACE("seed " + std::to_string(seed));
  auto x = random_vector(size_t(M * K), seed);
  auto w = random_vector(size_t(N * K), seed + 1);
  auto bias = random_vector(size_t(N), seed + 2);
  std::vector<float> y(size_t(M * N));
  cpu::linear_f32(x.data(), w.data(), bias.data(), y.data(), M, N, K);
  EXPECT_LT(max_abs_diff(y, reference_linear(x, w, bias, M, N, K)), kTol);

  // bf16 weights: the reference uses the same bf16-rounded weights, so only summation order differs.
  std::vector<uint16_t> w16(w.size());
  convert_f32_to_bf16(w.data(), w16.data(), w.size());
  std::vector<float> w_rounded(w.size());
  convert_bf16_to_f32(w16.data(), w_rounded.data(), w.size());
  cpu::linear_bf16(x.data(), w16.data(), nullptr, y.data(), M, N, K);
  EXPECT_LT(max_abs_diff(y, reference_linear(x, w_rounded, {}, M, N, K)), kTol);
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest,
                         ::testing::Values(std::make_tuple(1, 37, 64), std::make_tuple(3, 300, 70),
                                           std::make_tuple(17, 513, 96), std::make_tuple(64, 256, 512)));

TEST(CpuOps, RmsNormMatchesReference) {
  const int64_t T = 5, C = 96;
  auto x = random_vector(size_t(T * C), 11, 3.0f);
  auto w = random_vector(size_t(C), 12);
  std::vector<float> y(x.size());
  cpu::rmsnorm(x.data(), w.data(), y.data(), T, C, 1e-5f);
  for (int64_t t = 0; t < T; ++t) {
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += double(x[size_t(t * C + c)]) * x[size_t(t * C + c)];
    const double inv = 1.0 / std::sqrt(ss / C + 1e-5);
    for (int64_t c = 0; c < C; ++c)
      EXPECT_NEAR(y[size_t(t * C + c)], x[size_t(t * C + c)] * inv * w[size_t(c)], 1e-5);
  }
}

TEST(CpuOps, RopeRotatesHalvesByPositionAngle) {
  const int64_t T = 3, H = 2, D = 8;
  auto x = random_vector(size_t(T * H * D), 21);
  auto original = x;
  std::vector<float> inv_freq = {1.0f, 0.1f, 0.01f, 0.001f};
  std::vector<int64_t> pos = {0, 5, 100};
  cpu::rope(x.data(), pos.data(), inv_freq.data(), T, H, D);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < D / 2; ++i) {
        const size_t base = size_t((t * H + h) * D);
        const double angle = double(pos[size_t(t)]) * inv_freq[size_t(i)];
        const double a = original[base + size_t(i)], b = original[base + size_t(i + D / 2)];
        EXPECT_NEAR(x[base + size_t(i)], a * std::cos(angle) - b * std::sin(angle), 1e-4);
        EXPECT_NEAR(x[base + size_t(i + D / 2)], b * std::cos(angle) + a * std::sin(angle), 1e-4);
      }
  // Position 0 is the identity.
  for (int64_t j = 0; j < H * D; ++j) EXPECT_EQ(x[size_t(j)], original[size_t(j)]);
}

class AttentionTest : public ::testing::TestWithParam<int64_t> {};  // sliding window (0 = none)

TEST_P(AttentionTest, CausalGqaMatchesReference) {
  const int64_t window = GetParam();
  const int64_t p0 = 3, n = 4, H = 4, Hkv = 2, D = 8, S = p0 + n;
  auto q = random_vector(size_t(n * H * D), 31);
  auto k = random_vector(size_t(S * Hkv * D), 32);
  auto v = random_vector(size_t(S * Hkv * D), 33);
  std::vector<float> out(q.size());
  cpu::attention_causal(q.data(), k.data(), v.data(), out.data(), n, p0, H, Hkv, D, window);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / (H / Hkv);
      std::vector<double> s(size_t(p0 + i + 1), -1e300);  // masked keys keep exp(-inf) = 0
      const int64_t first = window > 0 ? std::max<int64_t>(0, p0 + i - window + 1) : 0;
      double mx = -1e30, den = 0;
      for (int64_t j = first; j <= p0 + i; ++j) {
        double d = 0;
        for (int64_t e = 0; e < D; ++e) d += double(q[size_t((i * H + h) * D + e)]) * k[size_t((j * Hkv + kvh) * D + e)];
        s[size_t(j)] = d / std::sqrt(double(D));
        mx = std::max(mx, s[size_t(j)]);
      }
      for (auto& e : s) den += (e = std::exp(e - mx));  // masked entries underflow to 0
      for (int64_t e = 0; e < D; ++e) {
        double o = 0;
        for (int64_t j = 0; j <= p0 + i; ++j) o += s[size_t(j)] / den * v[size_t((j * Hkv + kvh) * D + e)];
        EXPECT_NEAR(out[size_t((i * H + h) * D + e)], o, 1e-5);
      }
    }
}

INSTANTIATE_TEST_SUITE_P(Windows, AttentionTest, ::testing::Values(0, 1, 3, 100));

TEST(CpuOps, SwigluAndEmbedding) {
  std::vector<float> g = {-2.0f, 0.0f, 1.5f}, u = {1.0f, 2.0f, -3.0f}, out(3);
  cpu::swiglu(g.data(), u.data(), out.data(), 3);
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(out[i], g[i] / (1 + std::exp(-g[i])) * u[i], 1e-6);

  Tensor table = Tensor::from_vector({0, 1, 2, 3, 4, 5}, {3, 2});
  std::vector<int32_t> ids = {2, 0};
  std::vector<float> e(4);
  cpu::embedding(table, ids.data(), 2, e.data());
  EXPECT_EQ(e, (std::vector<float>{4, 5, 0, 1}));
  Tensor table16 = table.to(DType::BF16);
  cpu::embedding(table16, ids.data(), 2, e.data());
  EXPECT_EQ(e, (std::vector<float>{4, 5, 0, 1}));
  ids = {3};
  EXPECT_THROW(cpu::embedding(table, ids.data(), 1, e.data()), Error);
}
