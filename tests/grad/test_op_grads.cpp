// Finite-difference gradient checks of every training kernel, in double precision (T = double):
// for a fixed random R, the scalar L = Σ out · R depends on every output element, so its central
// difference (L(p + ε) - L(p - ε)) / 2ε for each input element p must match the analytic backward.
// Covers rmsnorm (dx, dweight), rope, swiglu, embedding (dtable), attention (dq, dk, dv; GQA,
// packed segments with padding, sliding window, several query blocks), the fused LM head +
// cross-entropy (dh, dw; ignored targets, grad_scale != 1) and the three matmul products.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "backend/cpu/attention.h"
#include "backend/cpu/cross_entropy.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/block_ops.h"
#include "core/rng.h"
#include "core/tensor.h"

using namespace qlora;
using Vec = std::vector<double>;

namespace {

// Step of the central differences: truncation error ~ε²·|L'''| ≈ 1e-12, rounding ~1e-16·|L|/ε ≈
// 1e-10·|L|, both far below the tolerance.
constexpr double kEps = 1e-6;
// Max |numeric - analytic| over the max |analytic| of a tensor. Correct kernels measure ~1e-10;
// any wrong term in a backward gives errors of order 1e-2..1.
constexpr double kGradTol = 1e-6;

Vec random_vec(size_t n, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  Vec v(n);
  for (auto& x : v) x = (double(rng.uniform()) * 2.0 - 1.0) * scale;
  return v;
}

double dot(const double* a, const double* b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

Tensor f64_tensor(const Vec& values, Shape shape) {
  Tensor t = Tensor::zeros(std::move(shape), DType::F64);
  std::copy(values.begin(), values.end(), t.data<double>());
  return t;
}

// Max relative error of `analytic` against central differences of `loss` in each element of param.
double fd_error(const std::string& name, double* param, size_t n, const std::function<double()>& loss,
                const double* analytic) {
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < n; ++i) {
    const double saved = param[i];
    param[i] = saved + kEps;
    const double up = loss();
    param[i] = saved - kEps;
    const double down = loss();
    param[i] = saved;
    const double numeric = (up - down) / (2 * kEps);
    max_diff = std::max(max_diff, std::abs(numeric - analytic[i]));
    max_ref = std::max(max_ref, std::abs(analytic[i]));
  }
  const double err = max_diff / std::max(max_ref, 1e-12);
  std::cout << "[grad] " << name << ": max rel error " << err << " (max |grad| " << max_ref << ")\n";
  EXPECT_GT(max_ref, 0.0) << name << ": gradient is all zero, the check would be vacuous";
  return err;
}

}  // namespace

TEST(OpGrads, RmsNorm) {
  const int64_t N = 3, C = 8;
  const uint64_t seed = 101;
  SCOPED_TRACE("seed " + std::to_string(seed));
  Vec x = random_vec(N * C, seed, 2.0), w = random_vec(C, seed + 1), R = random_vec(N * C, seed + 2);
  Vec y(N * C), rstd(N);
  auto loss = [&] {
    cpu::rmsnorm_forward<double>(x.data(), w.data(), y.data(), rstd.data(), N, C, 1e-5);
    return dot(y.data(), R.data(), y.size());
  };
  loss();
  // dx and dweight accumulate (+=): start from an offset and remove it.
  Vec dx(N * C, 0.5), dw(C, -0.25);
  cpu::rmsnorm_backward<double>(R.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(), N, C);
  for (auto& v : dx) v -= 0.5;
  for (auto& v : dw) v += 0.25;
  EXPECT_LT(fd_error("rmsnorm dx", x.data(), x.size(), loss, dx.data()), kGradTol);
  EXPECT_LT(fd_error("rmsnorm dweight", w.data(), w.size(), loss, dw.data()), kGradTol);
}

TEST(OpGrads, Rope) {
  const int64_t N = 3, n_heads = 2, D = 8;
  const uint64_t seed = 202;
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::vector<int64_t> positions = {0, 5, 17};
  std::vector<float> inv_freq(D / 2);
  for (int64_t i = 0; i < D / 2; ++i) inv_freq[size_t(i)] = 1.0f / std::pow(10000.0f, float(2 * i) / float(D));
  Vec x = random_vec(N * n_heads * D, seed), R = random_vec(x.size(), seed + 1);
  auto loss = [&] {
    Vec y = x;
    cpu::rope_forward<double>(y.data(), positions.data(), inv_freq.data(), N, n_heads, D);
    return dot(y.data(), R.data(), y.size());
  };
  Vec dx = R;
  cpu::rope_backward<double>(dx.data(), positions.data(), inv_freq.data(), N, n_heads, D);
  EXPECT_LT(fd_error("rope dx", x.data(), x.size(), loss, dx.data()), kGradTol);
}

TEST(OpGrads, SwiGlu) {
  const int64_t n = 40;
  const uint64_t seed = 303;
  SCOPED_TRACE("seed " + std::to_string(seed));
  Vec gate = random_vec(n, seed, 5.0), up = random_vec(n, seed + 1, 2.0), R = random_vec(n, seed + 2);
  Vec out(n);
  auto loss = [&] {
    cpu::swiglu_forward<double>(gate.data(), up.data(), out.data(), n);
    return dot(out.data(), R.data(), out.size());
  };
  Vec dgate(n), dup(n);
  cpu::swiglu_backward<double>(R.data(), gate.data(), up.data(), dgate.data(), dup.data(), n);
  EXPECT_LT(fd_error("swiglu dgate", gate.data(), gate.size(), loss, dgate.data()), kGradTol);
  EXPECT_LT(fd_error("swiglu dup", up.data(), up.size(), loss, dup.data()), kGradTol);
}

TEST(OpGrads, Embedding) {
  const int64_t V = 5, C = 4, N = 6;
  const uint64_t seed = 404;
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::vector<int32_t> ids = {3, 0, 3, 4, 1, 3};  // repeats must accumulate
  Tensor table = f64_tensor(random_vec(V * C, seed), {V, C});
  Vec R = random_vec(N * C, seed + 1), out(N * C);
  auto loss = [&] {
    cpu::embedding_forward<double>(table, ids.data(), N, out.data());
    return dot(out.data(), R.data(), out.size());
  };
  Vec dtable(V * C, 0.0);
  cpu::embedding_backward<double>(R.data(), ids.data(), N, C, dtable.data());
  EXPECT_LT(fd_error("embedding dtable", table.data<double>(), size_t(V * C), loss, dtable.data()), kGradTol);
}

struct AttentionCase {
  std::string name;
  AttentionShape shape;
  std::vector<int32_t> segments;  // empty: plain causal
};

class AttentionGrad : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(AttentionGrad, DqDkDv) {
  const AttentionCase& c = GetParam();
  const AttentionShape s = c.shape;
  const uint64_t seed = 505 + uint64_t(s.T * 7 + s.H);
  SCOPED_TRACE(c.name + " seed " + std::to_string(seed));
  const size_t nq = size_t(s.B * s.T * s.H * s.D), nkv = size_t(s.B * s.T * s.Hkv * s.D);
  Vec q = random_vec(nq, seed, 1.5), k = random_vec(nkv, seed + 1, 1.5), v = random_vec(nkv, seed + 2);
  Vec R = random_vec(nq, seed + 3), out(nq), lse(size_t(s.B * s.H * s.T));
  const int32_t* seg = c.segments.empty() ? nullptr : c.segments.data();
  auto loss = [&] {
    cpu::attention_forward<double>(q.data(), k.data(), v.data(), seg, out.data(), lse.data(), s);
    return dot(out.data(), R.data(), nq);
  };
  loss();
  Vec dq(nq, 9.0), dk(nkv, 9.0), dv(nkv, 9.0);  // overwritten, whatever they held
  cpu::attention_backward<double>(R.data(), q.data(), k.data(), v.data(), out.data(), lse.data(), seg, dq.data(),
                                  dk.data(), dv.data(), s);
  EXPECT_LT(fd_error(c.name + " dq", q.data(), nq, loss, dq.data()), kGradTol);
  EXPECT_LT(fd_error(c.name + " dk", k.data(), nkv, loss, dk.data()), kGradTol);
  EXPECT_LT(fd_error(c.name + " dv", v.data(), nkv, loss, dv.data()), kGradTol);
  // Padding rows (segment -1): out = 0, lse = -inf, dq = 0, and their k/v get no gradient.
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t t = 0; t < s.T; ++t) {
      if (!seg || seg[b * s.T + t] >= 0) continue;
      for (int64_t h = 0; h < s.H; ++h) {
        EXPECT_TRUE(std::isinf(lse[size_t((b * s.H + h) * s.T + t)]));
        for (int64_t d = 0; d < s.D; ++d) {
          const size_t i = size_t(((b * s.T + t) * s.H + h) * s.D + d);
          EXPECT_EQ(out[i], 0.0);
          EXPECT_EQ(dq[i], 0.0);
        }
      }
      for (int64_t j = 0; j < s.Hkv * s.D; ++j) {
        EXPECT_EQ(dk[size_t((b * s.T + t) * s.Hkv * s.D + j)], 0.0);
        EXPECT_EQ(dv[size_t((b * s.T + t) * s.Hkv * s.D + j)], 0.0);
      }
    }
}

std::vector<int32_t> long_segments() {
  // T = 70 crosses the 64-row query block: segments 0 (0..29), 1 (30..49), 2 (50..66), padding.
  std::vector<int32_t> seg(70);
  for (int t = 0; t < 70; ++t) seg[size_t(t)] = t < 30 ? 0 : t < 50 ? 1 : t < 67 ? 2 : -1;
  return seg;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, AttentionGrad,
    ::testing::Values(
        AttentionCase{"causal_gqa", {2, 9, 4, 2, 4, 0}, {}},
        AttentionCase{"segments_gqa",
                      {2, 9, 4, 2, 4, 0},
                      {0, 0, 0, 1, 1, 1, 1, -1, -1, /* b1 */ 5, 5, 2, 2, 2, 2, 2, 2, 2}},
        AttentionCase{"window_mha", {1, 11, 2, 2, 4, 3}, {}},
        AttentionCase{"long_segments_window", {1, 70, 2, 1, 4, 20}, long_segments()}),
    [](const ::testing::TestParamInfo<AttentionCase>& info) { return info.param.name; });

TEST(OpGrads, CrossEntropy) {
  const int64_t N = 7, C = 5, V = 9;
  const uint64_t seed = 606;
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::vector<int32_t> targets = {3, -100, 0, 8, -100, 8, 2};
  const double grad_scale = 0.37;
  Vec h = random_vec(N * C, seed, 2.0);
  Tensor w = f64_tensor(random_vec(V * C, seed + 1, 2.0), {V, C});
  // d(grad_scale · loss_sum) is what forward_backward returns.
  auto loss = [&] {
    return grad_scale * cpu::cross_entropy_forward<double>(h.data(), w, targets.data(), N, nullptr, 3).loss_sum;
  };
  Vec dh(N * C, 7.0), dw(V * C, 0.0);
  const auto res = cpu::cross_entropy_forward_backward<double>(h.data(), w, targets.data(), N, grad_scale, dh.data(),
                                                              dw.data(), 3);
  EXPECT_EQ(res.count, 5);
  EXPECT_NEAR(res.loss_sum * grad_scale, loss(), 1e-12);
  EXPECT_LT(fd_error("cross_entropy dh", h.data(), h.size(), loss, dh.data()), kGradTol);
  EXPECT_LT(fd_error("cross_entropy dw", w.data<double>(), size_t(V * C), loss, dw.data()), kGradTol);
}

TEST(OpGrads, Matmuls) {
  const int64_t M = 3, N = 4, K = 5;
  const uint64_t seed = 707;
  SCOPED_TRACE("seed " + std::to_string(seed));
  Vec x = random_vec(M * K, seed), R = random_vec(M * N, seed + 1), y(M * N);
  Tensor w = f64_tensor(random_vec(N * K, seed + 2), {N, K});
  auto loss = [&] {
    cpu::matmul_xwt<double>(x.data(), w, y.data(), M);
    return dot(y.data(), R.data(), y.size());
  };
  // Both backward products accumulate: start from an offset and remove it.
  Vec dx(M * K, 1.0), dw(N * K, -2.0);
  cpu::matmul_dy_w_acc<double>(R.data(), w, dx.data(), M);
  cpu::matmul_dyt_x_acc<double>(R.data(), x.data(), dw.data(), M, N, K);
  for (auto& v : dx) v -= 1.0;
  for (auto& v : dw) v += 2.0;
  EXPECT_LT(fd_error("matmul dx", x.data(), x.size(), loss, dx.data()), kGradTol);
  EXPECT_LT(fd_error("matmul dw", w.data<double>(), size_t(N * K), loss, dw.data()), kGradTol);
}
