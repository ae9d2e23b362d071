// Finite-difference checks of linear_backward (src/lora/lora_linear.cpp) in double precision: dA,
// dB, dx and, for full fine-tuning, grad_weight / grad_bias, on a dense f64 base and on a 4-bit
// (NF4, double-quantized) base, with bias, with a nonzero B, and with dropout p = 0.3 (the mask is a
// function of the dropout seed, so the perturbed forwards reuse the same one).
// The loss is L = Σ y ⊙ G for a fixed random G (so dL/dy = G). L is linear in every single
// parameter and input element, so central differences are exact up to rounding: the tolerance can
// be tight.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "core/rng.h"
#include "lora/lora_linear.h"
#include "quant/nf4.h"

using namespace qlora;

namespace {

// The backend the layers run on: the CPU's, host memory.
Backend& cpu() {
  static const std::shared_ptr<Backend> backend = make_cpu_backend();
  return *backend;
}

// Step of the central differences. L is linear in each coordinate, so the truncation error is zero
// and only rounding remains: |L| ~ 10, eps 1.1e-16, h 1e-4 -> ~1e-11 absolute on gradients of
// size ~1, i.e. ~1e-11 relative. A wrong gradient (a missing scale, a transposed product, the mask
// not applied) is off by O(1) relative.
constexpr double kStep = 1e-4;
constexpr double kRelTol = 1e-8;

constexpr int64_t kM = 5, kK = 64, kN = 12, kR = 4;
constexpr uint64_t kDropoutSeed = 1234;

struct Case {
  std::string label;
  bool quantized;
  bool bias;
  double dropout;
  bool lora;
  bool train_weight;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.label; }

std::vector<double> random_vector(size_t n, Rng& rng, double scale = 1.0) {
  std::vector<double> v(n);
  for (auto& x : v) x = (double(rng.uniform()) * 2.0 - 1.0) * scale;
  return v;
}

Tensor f64_tensor(const std::vector<double>& v, Shape shape) {
  Tensor t = Tensor::zeros(std::move(shape), DType::F64);
  std::copy(v.begin(), v.end(), t.data<double>());
  return t;
}

Linear make_linear(const Case& c, uint64_t seed) {
  Rng rng(seed);
  Linear l;
  l.name = "model.layers.0.mlp.up_proj";
  l.in = kK;
  l.out = kN;
  if (c.quantized) {
    std::vector<float> w(size_t(kN * kK));
    for (auto& x : w) x = rng.uniform() * 2.0f - 1.0f;
    l.qweight = std::make_shared<QuantTensor>(
        quantize_4bit(w.data(), {kN, kK}, QuantType::NF4, 64, /*double_quant=*/true));
  } else {
    l.weight = f64_tensor(random_vector(size_t(kN * kK), rng), {kN, kK});
  }
  if (c.bias) l.bias = f64_tensor(random_vector(size_t(kN), rng), {kN});
  if (c.train_weight) {
    l.train_weight = true;
    l.grad_weight = Tensor::zeros({kN, kK}, DType::F64);
    if (c.bias) l.grad_bias = Tensor::zeros({kN}, DType::F64);
  }
  if (c.lora) {
    LoraConfig cfg;
    cfg.r = kR;
    cfg.lora_alpha = 6;
    cfg.lora_dropout = c.dropout;
    cfg.seed = seed;
    attach_lora(l, cfg, DType::F64);
    // B = 0 after init would make dA zero and hide errors in it: make B random.
    const std::vector<double> b = random_vector(size_t(kN * kR), rng, 0.5);
    std::copy(b.begin(), b.end(), l.lora->B.data<double>());
  }
  return l;
}

double loss(const Linear& l, const std::vector<double>& x, const std::vector<double>& g) {
  std::vector<double> y(size_t(kM * kN));
  linear_forward<double>(cpu(), l, x.data(), y.data(), kM, /*training=*/true, kDropoutSeed, nullptr);
  double s = 0;
  for (size_t i = 0; i < y.size(); ++i) s += y[i] * g[i];
  return s;
}

// Central differences of loss with respect to every element of v (perturbed in place).
std::vector<double> numeric_grad(double* v, int64_t n, const std::function<double()>& f) {
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double keep = v[i];
    v[i] = keep + kStep;
    const double up = f();
    v[i] = keep - kStep;
    const double down = f();
    v[i] = keep;
    out[size_t(i)] = (up - down) / (2 * kStep);
  }
  return out;
}

// max |a - b| / max |b|: relative to the gradient's scale, robust to individual near-zero entries.
double rel_error(const std::vector<double>& analytic, const std::vector<double>& numeric) {
  double diff = 0, ref = 0;
  for (size_t i = 0; i < numeric.size(); ++i) {
    diff = std::max(diff, std::abs(analytic[i] - numeric[i]));
    ref = std::max(ref, std::abs(numeric[i]));
  }
  return diff / std::max(ref, 1e-300);
}

std::vector<double> values(const Tensor& t) { return {t.data<double>(), t.data<double>() + t.numel()}; }

}  // namespace

class LoraGradTest : public ::testing::TestWithParam<Case> {};

TEST_P(LoraGradTest, MatchesCentralDifferences) {
  const Case& c = GetParam();
  const uint64_t seed = 42 + std::hash<std::string>{}(c.label) % 1000;
  SCOPED_TRACE(c.label + ", seed " + std::to_string(seed));
  Linear l = make_linear(c, seed);
  Rng rng(seed + 7);
  std::vector<double> x = random_vector(size_t(kM * kK), rng);
  const std::vector<double> g = random_vector(size_t(kM * kN), rng);  // dL/dy
  // dx starts nonzero: the backward must accumulate into it.
  const std::vector<double> dx0 = random_vector(size_t(kM * kK), rng);

  std::vector<double> y(size_t(kM * kN)), dx = dx0;
  LinearSaved saved;
  linear_forward<double>(cpu(), l, x.data(), y.data(), kM, true, kDropoutSeed, &saved);
  linear_backward<double>(cpu(), l, x.data(), g.data(), dx.data(), saved, kM);
  for (size_t i = 0; i < dx.size(); ++i) dx[i] -= dx0[i];

  const auto f = [&] { return loss(l, x, g); };
  const double e_dx = rel_error(dx, numeric_grad(x.data(), kM * kK, f));
  std::printf("[%s] dx rel err %.2e\n", c.label.c_str(), e_dx);
  EXPECT_LT(e_dx, kRelTol) << "dx";

  if (c.lora) {
    LoraAdapter& a = *l.lora;
    const double e_a = rel_error(values(a.grad_A), numeric_grad(a.A.data<double>(), a.A.numel(), f));
    const double e_b = rel_error(values(a.grad_B), numeric_grad(a.B.data<double>(), a.B.numel(), f));
    std::printf("[%s] dA rel err %.2e, dB rel err %.2e\n", c.label.c_str(), e_a, e_b);
    EXPECT_LT(e_a, kRelTol) << "dA";
    EXPECT_LT(e_b, kRelTol) << "dB";
  }
  if (c.train_weight) {
    const double e_w = rel_error(values(l.grad_weight), numeric_grad(l.weight.data<double>(), l.weight.numel(), f));
    std::printf("[%s] dW rel err %.2e\n", c.label.c_str(), e_w);
    EXPECT_LT(e_w, kRelTol) << "grad_weight";
    if (c.bias) {
      const double e_bias = rel_error(values(l.grad_bias), numeric_grad(l.bias.data<double>(), l.bias.numel(), f));
      std::printf("[%s] dbias rel err %.2e\n", c.label.c_str(), e_bias);
      EXPECT_LT(e_bias, kRelTol) << "grad_bias";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Bases, LoraGradTest,
    ::testing::Values(Case{"dense_lora_bias", false, true, 0.0, true, false},
                      Case{"dense_lora_dropout", false, true, 0.3, true, false},
                      Case{"dense_full_finetune_and_lora", false, true, 0.3, true, true},
                      Case{"dense_full_finetune_only", false, true, 0.0, false, true},
                      Case{"nf4_lora_bias_dropout", true, true, 0.3, true, false},
                      Case{"nf4_lora_no_bias", true, false, 0.0, true, false}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.label; });

// dx = null (nothing upstream needs it) must leave the parameter gradients as they are with dx.
TEST(LoraGrad, NullDxGivesSameParameterGrads) {
  const Case c{"null_dx", false, true, 0.3, true, true};
  Linear with = make_linear(c, 5), without = make_linear(c, 5);
  Rng rng(6);
  const std::vector<double> x = random_vector(size_t(kM * kK), rng), g = random_vector(size_t(kM * kN), rng);
  std::vector<double> y(size_t(kM * kN)), dx(size_t(kM * kK));
  LinearSaved s1, s2;
  linear_forward<double>(cpu(), with, x.data(), y.data(), kM, true, kDropoutSeed, &s1);
  linear_backward<double>(cpu(), with, x.data(), g.data(), dx.data(), s1, kM);
  linear_forward<double>(cpu(), without, x.data(), y.data(), kM, true, kDropoutSeed, &s2);
  linear_backward<double>(cpu(), without, x.data(), g.data(), nullptr, s2, kM);
  EXPECT_EQ(values(with.lora->grad_A), values(without.lora->grad_A));
  EXPECT_EQ(values(with.lora->grad_B), values(without.lora->grad_B));
  EXPECT_EQ(values(with.grad_weight), values(without.grad_weight));
  EXPECT_EQ(values(with.grad_bias), values(without.grad_bias));
}
