// The bf16 products (backend/cpu/gemm_bf16.h) on every ISA this CPU has — AMX, AVX512-BF16 and the
// f32 fallback — against a double-precision reference on the same bf16-rounded operands, for the
// forward y = x·Wᵀ, dx += dy·W and dW += dyᵀ·x, on aligned shapes (W read in place) and ragged
// ones (padding on every edge), dense and 4-bit weights; QLORA_CPU_ISA forcing each path; and the
// LM head + cross-entropy in bf16 (bf16 logits) against a double reference.
//
// Tolerance: once both operands are bf16, each product is exact in f32 (8 × 8 significant bits),
// so the kernels differ from the exact sum only by f32 summation in some order. The bound for any
// order is |computed - exact| <= n·u·Σ|terms| (u = 2^-24, Higham's gamma_n); we allow
// n·2^-23·Σ|terms|, twice that. It holds on any x86-64 CPU. A wrong tile, pair or padding gives
// errors of the order of Σ|terms| itself.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/cross_entropy.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/onednn_gemm.h"
#include "backend/cpu/qmatmul.h"
#include "backend/cpu/threads.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"
#include "quant/nf4.h"

using namespace qlora;
using cpu::CpuIsa;

namespace {

constexpr double kEpsF32 = 1.0 / 8388608.0;  // 2^-23

std::vector<float> random_values(int64_t n, Rng& rng, float scale = 1.0f) {
  std::vector<float> v(static_cast<size_t>(n), 0.0f);
  for (float& x : v) x = (2.0f * rng.uniform() - 1.0f) * scale;
  return v;
}

double rounded(float v) { return double(bf16_to_f32(f32_to_bf16(v))); }

std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  convert_f32_to_bf16(v.data(), out.data(), v.size());
  return out;
}

// c (M, Nc) = a (M, Kc) · b (Kc, Nc) in double over bf16-rounded operands, element accessors given.
// bound receives n·2^-23·Σ|terms| per element.
template <typename A, typename B>
void reference(int64_t M, int64_t Nc, int64_t Kc, A a, B b, std::vector<double>& c, std::vector<double>& bound) {
  c.assign(size_t(M * Nc), 0.0);
  bound.assign(size_t(M * Nc), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < Nc; ++j) {
      double s = 0, abs = 0;
      for (int64_t k = 0; k < Kc; ++k) {
        const double t = a(i, k) * b(k, j);
        s += t, abs += std::fabs(t);
      }
      c[size_t(i * Nc + j)] = s;
      bound[size_t(i * Nc + j)] = double(std::max<int64_t>(Kc, 1)) * kEpsF32 * abs + 1e-30;
    }
}

void expect_within(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& bound,
                   const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  int reported = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::fabs(double(got[i]) - want[i]) <= bound[i]) continue;
    ADD_FAILURE() << what << " element " << i << ": got " << got[i] << ", want " << want[i] << " ± " << bound[i];
    if (++reported == 5) return;
  }
}

std::vector<CpuIsa> isas_here() {
  std::vector<CpuIsa> out;
  for (CpuIsa isa : {CpuIsa::Avx2, CpuIsa::Avx512Bf16, CpuIsa::Amx})
    if (isa <= cpu::detected_isa()) out.push_back(isa);
  return out;
}

struct Shape3 {
  int64_t N, O, K;
};
// Aligned (W read in place, whole tiles), ragged on every edge, single rows, and a K spanning many steps.
const Shape3 kShapes[] = {{1, 1, 1},    {5, 7, 9},     {37, 45, 70},  {64, 96, 128},
                          {33, 32, 64}, {100, 200, 96}, {3, 50, 1000}, {256, 64, 576}};

// One way of running the products: an ISA level and, where it has native bf16, the engine
// (our micro-kernels or oneDNN's matmul, QLORA_CPU_GEMM).
struct Kernel {
  CpuIsa isa;
  const char* engine;
};

std::vector<Kernel> kernels_here() {
  std::vector<Kernel> out;
  for (CpuIsa isa : isas_here()) {
    out.push_back({isa, "own"});
    if (cpu::has_bf16_kernel(isa) && cpu::onednn_built()) out.push_back({isa, "onednn"});
  }
  return out;
}

std::string kernel_name(const Kernel& k) { return fmt::format("{}_{}", cpu::isa_name(k.isa), k.engine); }

// Sets an environment variable for one scope (nullptr: unset), then restores the caller's value,
// so a suite run with QLORA_CPU_GEMM or QLORA_CPU_ISA set still sees it in later tests.
class ScopedEnv {
 public:
  ScopedEnv(const char* key, const char* value) : key_(key) {
    if (const char* old = std::getenv(key)) old_ = old;
    if (value) setenv(key, value, 1);
    else unsetenv(key);
  }
  ~ScopedEnv() {
    if (old_) setenv(key_, old_->c_str(), 1);
    else unsetenv(key_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* key_;
  std::optional<std::string> old_;
};

// Sets QLORA_CPU_GEMM for one scope (nullptr: the default).
class ForcedEngine : ScopedEnv {
 public:
  explicit ForcedEngine(const char* name) : ScopedEnv("QLORA_CPU_GEMM", name) {}
};

class GemmBf16 : public ::testing::TestWithParam<Kernel> {
 protected:
  ForcedEngine engine_{GetParam().engine};
};

TEST_P(GemmBf16, ForwardMatchesReference) {
  const CpuIsa isa = GetParam().isa;
  Rng rng(11);
  for (const Shape3& s : kShapes) {
    const std::vector<float> x = random_values(s.N * s.K, rng), w = random_values(s.O * s.K, rng);
    const std::vector<uint16_t> w16 = to_bf16(w);
    std::vector<float> y(size_t(s.N * s.O), 123.0f);  // overwritten
    cpu::bf16_xwt(x.data(), cpu::Bf16Matrix{s.O, s.K, w16.data(), s.K, {}}, y.data(), s.N, isa);
    std::vector<double> want, bound;
    reference(
        s.N, s.O, s.K, [&](int64_t n, int64_t k) { return rounded(x[size_t(n * s.K + k)]); },
        [&](int64_t k, int64_t o) { return rounded(w[size_t(o * s.K + k)]); }, want, bound);
    expect_within(y, want, bound, fmt::format("{} xwt N={} O={} K={}", cpu::isa_name(isa), s.N, s.O, s.K));
  }
}

TEST_P(GemmBf16, InputGradientAccumulates) {
  const CpuIsa isa = GetParam().isa;
  Rng rng(12);
  for (const Shape3& s : kShapes) {
    const std::vector<float> dy = random_values(s.N * s.O, rng), w = random_values(s.O * s.K, rng);
    const std::vector<float> dx0 = random_values(s.N * s.K, rng);
    const std::vector<uint16_t> w16 = to_bf16(w);
    std::vector<float> dx = dx0;
    cpu::bf16_dy_w_acc(dy.data(), cpu::Bf16Matrix{s.O, s.K, w16.data(), s.K, {}}, dx.data(), s.N, isa);
    std::vector<double> want, bound;
    reference(
        s.N, s.K, s.O, [&](int64_t n, int64_t o) { return rounded(dy[size_t(n * s.O + o)]); },
        [&](int64_t o, int64_t k) { return rounded(w[size_t(o * s.K + k)]); }, want, bound);
    for (size_t i = 0; i < want.size(); ++i) want[i] += dx0[i], bound[i] += kEpsF32 * std::fabs(want[i]);
    expect_within(dx, want, bound, fmt::format("{} dy_w N={} O={} K={}", cpu::isa_name(isa), s.N, s.O, s.K));
  }
}

TEST_P(GemmBf16, WeightGradientAccumulates) {
  const CpuIsa isa = GetParam().isa;
  Rng rng(13);
  for (const Shape3& s : kShapes) {
    const std::vector<float> dy = random_values(s.N * s.O, rng), x = random_values(s.N * s.K, rng);
    const std::vector<float> dw0 = random_values(s.O * s.K, rng);
    std::vector<float> dw = dw0;
    cpu::bf16_dyt_x_acc(dy.data(), x.data(), dw.data(), s.N, s.O, s.K, isa);
    std::vector<double> want, bound;
    reference(
        s.O, s.K, s.N, [&](int64_t o, int64_t n) { return rounded(dy[size_t(n * s.O + o)]); },
        [&](int64_t n, int64_t k) { return rounded(x[size_t(n * s.K + k)]); }, want, bound);
    for (size_t i = 0; i < want.size(); ++i) want[i] += dw0[i], bound[i] += kEpsF32 * std::fabs(want[i]);
    expect_within(dw, want, bound, fmt::format("{} dyt_x N={} O={} K={}", cpu::isa_name(isa), s.N, s.O, s.K));
  }
}

std::string kernel_param_name(const ::testing::TestParamInfo<Kernel>& info) { return kernel_name(info.param); }

INSTANTIATE_TEST_SUITE_P(EveryIsaHere, GemmBf16, ::testing::ValuesIn(kernels_here()), kernel_param_name);

// The default engine's results do not depend on the thread count, which follows the machine's
// load (threads.h): every output block is summed by one thread in one order. (oneDNN's do: the
// first SmolLM2 bf16 loss is 13.57614 with it at 1 thread, 13.57920 at 2 and with ours at either.)
TEST(GemmBf16Own, SameBitsAtOneAndTwoThreads) {
  const ForcedEngine own("own");
  Rng rng(21);
  // A square-ish product, and an LM-head-shaped one: a small output over a long contraction
  // (dy·W sums 8192 terms per output), the shape a library may split between threads.
  for (const Shape3& s : {Shape3{200, 320, 448}, Shape3{64, 8192, 128}})
  for (CpuIsa isa : isas_here()) {
    const int64_t N = s.N, O = s.O, K = s.K;
    const std::vector<float> x = random_values(N * K, rng), dy = random_values(N * O, rng);
    const std::vector<uint16_t> w16 = to_bf16(random_values(O * K, rng));
    const cpu::Bf16Matrix w{O, K, w16.data(), K, {}};
    std::vector<float> y[2], dx[2], dw[2];
    for (int t = 0; t < 2; ++t) {
      set_num_threads(t + 1);
      y[t].assign(size_t(N * O), 0.0f), dx[t].assign(size_t(N * K), 0.0f), dw[t].assign(size_t(O * K), 0.0f);
      cpu::bf16_xwt(x.data(), w, y[t].data(), N, isa);
      cpu::bf16_dy_w_acc(dy.data(), w, dx[t].data(), N, isa);
      cpu::bf16_dyt_x_acc(dy.data(), x.data(), dw[t].data(), N, O, K, isa);
    }
    set_num_threads(0);
    EXPECT_EQ(y[0], y[1]) << cpu::isa_name(isa) << " xwt";
    EXPECT_EQ(dx[0], dx[1]) << cpu::isa_name(isa) << " dy_w";
    EXPECT_EQ(dw[0], dw[1]) << cpu::isa_name(isa) << " dyt_x";
  }
}

TEST(GemmEngine, DefaultAndOverride) {
  const ForcedEngine defaults(nullptr);
  EXPECT_EQ(cpu::gemm_engine(CpuIsa::Avx512Bf16), cpu::GemmEngine::Own);  // the default
  EXPECT_EQ(cpu::gemm_engine(CpuIsa::Amx), cpu::GemmEngine::Own);
  if (cpu::onednn_built()) {
    ForcedEngine e("onednn");
    EXPECT_EQ(cpu::gemm_engine(CpuIsa::Avx512Bf16), cpu::GemmEngine::OneDnn);
    EXPECT_EQ(cpu::gemm_engine(CpuIsa::Avx2), cpu::GemmEngine::Own);  // no native bf16: the f32 fallback
  }
  ForcedEngine e("blas");
  try {
    cpu::gemm_engine(CpuIsa::Avx512Bf16);
    FAIL() << "an unknown QLORA_CPU_GEMM was accepted";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("QLORA_CPU_GEMM='blas'"), std::string::npos) << err.what();
  }
}

// Sets QLORA_CPU_ISA for one scope.
class ForcedIsa : ScopedEnv {
 public:
  explicit ForcedIsa(const char* name) : ScopedEnv("QLORA_CPU_ISA", name) {}
};

TEST(CpuIsa, EnvironmentCapsTheChoice) {
  const ForcedIsa uncapped(nullptr);
  {
    ForcedIsa f("avx2");
    EXPECT_EQ(cpu::active_isa(), CpuIsa::Avx2);
  }
  {
    ForcedIsa f("amx");  // never above what the CPU has
    EXPECT_EQ(cpu::active_isa(), cpu::detected_isa());
  }
  {
    ForcedIsa f("avx512bf16");
    EXPECT_EQ(cpu::active_isa(), std::min(CpuIsa::Avx512Bf16, cpu::detected_isa()));
  }
  EXPECT_EQ(cpu::active_isa(), cpu::detected_isa());
  ForcedIsa f("sse2");
  try {
    cpu::active_isa();
    FAIL() << "an unknown QLORA_CPU_ISA was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("QLORA_CPU_ISA='sse2'"), std::string::npos) << e.what();
  }
}

// The 4-bit products through the public entry points, each ISA forced by QLORA_CPU_ISA: every
// weight value is code · absmax in f32 rounded to bf16 (bitsandbytes' bf16 dequantization).
// Shapes whose rows do not fill whole 64-value blocks (K = 32, 72) as well as aligned ones, and one
// whose weight is dequantized in several row panels (O = 1100: panels of 512, 512 and 76 rows).
TEST(QmatmulBf16, EveryForcedIsaMatchesReference) {
  Rng rng(14);
  for (const Shape3& s : {Shape3{45, 70, 128}, Shape3{48, 72, 32}, Shape3{24, 32, 72}, Shape3{5, 1100, 4160}}) {
  const int64_t N = s.N, O = s.O, K = s.K;
  SCOPED_TRACE(fmt::format("N={} O={} K={}", N, O, K));
  const std::vector<float> w = random_values(O * K, rng, 0.05f);
  const QuantTensor q = quantize_4bit(w.data(), {O, K}, QuantType::NF4, 64, true);
  const Tensor deq = dequantize_4bit(q);
  const float* wq = deq.data<float>();
  const std::vector<float> x = random_values(N * K, rng), dy = random_values(N * O, rng);
  std::vector<double> y_want, y_bound, dx_want, dx_bound;
  reference(
      N, O, K, [&](int64_t n, int64_t k) { return rounded(x[size_t(n * K + k)]); },
      [&](int64_t k, int64_t o) { return rounded(wq[o * K + k]); }, y_want, y_bound);
  reference(
      N, K, O, [&](int64_t n, int64_t o) { return rounded(dy[size_t(n * O + o)]); },
      [&](int64_t o, int64_t k) { return rounded(wq[o * K + k]); }, dx_want, dx_bound);
  for (const Kernel& k : kernels_here()) {
    const CpuIsa isa = k.isa;
    ForcedIsa f(cpu::isa_name(isa));
    ForcedEngine e(k.engine);
    ASSERT_EQ(cpu::active_isa(), isa);
    std::vector<float> y(size_t(N * O), 7.0f), dx(size_t(N * K), 0.0f);
    cpu::qmatmul_forward_bf16(x.data(), q, y.data(), N);
    cpu::qmatmul_dy_w_acc_bf16(dy.data(), q, dx.data(), N);
    expect_within(y, y_want, y_bound, kernel_name(k) + " qmatmul_forward_bf16");
    expect_within(dx, dx_want, dx_bound, kernel_name(k) + " qmatmul_dy_w_acc_bf16");
  }
  }
}

TEST(MatmulBf16, RejectsANonBf16Weight) {
  const Tensor w = Tensor::zeros({4, 4}, DType::F32);
  std::vector<float> x(16), y(16);
  try {
    cpu::matmul_xwt_bf16(x.data(), w, y.data(), 4);
    FAIL() << "an f32 weight was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bf16 weight"), std::string::npos) << e.what();
  }
}

}  // namespace

// The bf16 LM head + cross-entropy on every forced ISA against a double reference: logits of the
// bf16-rounded operands, rounded to bf16, then the softmax. The kernel's f32 logit lies within the
// summation bound b of the exact one, so its bf16 rounding is the reference's except where
// [l - b, l + b] straddles a rounding midpoint ("a flip"): there it may be one bf16 ulp off. Flips
// move lse by at most f = Σ p_j·ulp_j (first order; ulps are < 2^-5 here) and the target logit by
// its own ulp: that, plus f32 softmax error, is the loss tolerance. Logits left unrounded miss it
// (they are ~2^-9 |l| off on every logit, not on the few that flip); a wrong row or target by O(1).
// Gradients: dlogit_j = scale·(p_j - onehot) moves by scale·p_j·(e^(ulp_j + f) - 1) through flips,
// and the products round it to bf16 (|rel err| <= 2^-9, 2^-8 allowed); dh and dW are held to
// Σ_j |W or h|·that, plus f32 summation. A transposed head or a missing accumulate is O(1) off.
TEST(CrossEntropyBf16, EveryForcedIsaMatchesReference) {
  Rng rng(15);
  const int64_t N = 37, V = 300, C = 96;
  const std::vector<float> h = random_values(N * C, rng, 0.5f), w = random_values(V * C, rng, 0.5f);
  Tensor head = Tensor::zeros({V, C}, DType::BF16);
  convert_f32_to_bf16(w.data(), head.data<uint16_t>(), size_t(V * C));
  std::vector<int32_t> targets(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) targets[size_t(n)] = n % 5 == 3 ? -100 : int32_t((n * 37) % V);
  const float scale = 0.5f;
  // Reference in double: per row the loss, its tolerance, dlogits and their tolerance.
  std::vector<double> loss_want(size_t(N), 0.0), loss_tol(size_t(N), 0.0);
  std::vector<double> dlog(size_t(N * V), 0.0), dlog_tol(size_t(N * V), 0.0);
  for (int64_t n = 0; n < N; ++n) {
    if (targets[size_t(n)] < 0) continue;
    std::vector<double> l(static_cast<size_t>(V)), ulp(static_cast<size_t>(V), 0.0);
    for (int64_t j = 0; j < V; ++j) {
      double s = 0, abs = 0;
      for (int64_t k = 0; k < C; ++k) {
        const double t = rounded(h[size_t(n * C + k)]) * rounded(w[size_t(j * C + k)]);
        s += t, abs += std::fabs(t);
      }
      const double b = double(C) * kEpsF32 * abs + 1e-30;
      l[size_t(j)] = rounded(float(s));
      ulp[size_t(j)] = std::fabs(rounded(float(s + b)) - rounded(float(s - b)));  // 0 unless it may flip
    }
    const int32_t t = targets[size_t(n)];
    const double m = *std::max_element(l.begin(), l.end());
    double z = 0;
    for (double v : l) z += std::exp(v - m);
    double flips = 0;
    for (int64_t j = 0; j < V; ++j) flips += std::exp(l[size_t(j)] - m) / z * ulp[size_t(j)] * 1.02;
    loss_want[size_t(n)] = m + std::log(z) - l[size_t(t)];
    loss_tol[size_t(n)] = flips + ulp[size_t(t)] + double(V) * kEpsF32;
    for (int64_t j = 0; j < V; ++j) {
      const double p = std::exp(l[size_t(j)] - m) / z;
      double& d = dlog[size_t(n * V + j)];
      d = scale * (p - (j == t ? 1.0 : 0.0));
      dlog_tol[size_t(n * V + j)] = scale * p * std::expm1(ulp[size_t(j)] + flips) + std::fabs(d) / 256;
    }
  }
  std::vector<double> dh_want(size_t(N * C), 0.0), dh_tol(size_t(N * C), 1e-12);
  std::vector<double> dw_want(size_t(V * C), 0.0), dw_tol(size_t(V * C), 1e-12);
  const double sum_eps = double(std::max(V, N)) * kEpsF32;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < V; ++j) {
      const double d = dlog[size_t(n * V + j)], dt = dlog_tol[size_t(n * V + j)] + sum_eps * std::fabs(d);
      for (int64_t k = 0; k < C; ++k) {
        const double wk = rounded(w[size_t(j * C + k)]), hk = rounded(h[size_t(n * C + k)]);
        dh_want[size_t(n * C + k)] += d * wk, dh_tol[size_t(n * C + k)] += dt * std::fabs(wk);
        dw_want[size_t(j * C + k)] += d * hk, dw_tol[size_t(j * C + k)] += dt * std::fabs(hk);
      }
    }
  for (const Kernel& k : kernels_here()) {
    ForcedIsa f(cpu::isa_name(k.isa));
    ForcedEngine e(k.engine);
    const std::string name = kernel_name(k);
    std::vector<float> row_losses(size_t(N), -1.0f), dh(size_t(N * C), 9.0f), dw(size_t(V * C), 0.0f);
    const CrossEntropyResult fwd =
        cpu::cross_entropy_forward_bf16(h.data(), head, targets.data(), N, row_losses.data(), /*chunk_rows=*/8);
    const CrossEntropyResult both = cpu::cross_entropy_forward_backward_bf16(h.data(), head, targets.data(), N, scale,
                                                                             dh.data(), dw.data(), 8);
    for (int64_t n = 0; n < N; ++n)
      EXPECT_NEAR(row_losses[size_t(n)], loss_want[size_t(n)], loss_tol[size_t(n)]) << name << " row " << n;
    EXPECT_EQ(fwd.count, both.count);
    EXPECT_EQ(fwd.loss_sum, both.loss_sum) << name << ": the backward pass computed a different loss";
    expect_within(dh, dh_want, dh_tol, name + " cross-entropy dh");
    expect_within(dw, dw_want, dw_tol, name + " cross-entropy dW");
  }
}
