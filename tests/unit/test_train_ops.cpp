// The float kernels of backend/cpu against their double twins (whose gradients tests/grad checks
// by finite differences) and against plain loops: rmsnorm, rope, swiglu, embedding, add, attention
// (GQA, segments, window, several query blocks, KV-cache decoding against one pass and against an
// explicit-mask reference), the fused LM head + cross-entropy (chunking, ignored rows, bf16 head),
// the matmul products (f32 and bf16 weights over several 256-row panels, the decode paths), and the
// dtype checks.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include "backend/cpu/attention.h"
#include "backend/cpu/block_ops.h"
#include "backend/cpu/cross_entropy.h"
#include "backend/cpu/matmul.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"

using namespace qlora;
using VecF = std::vector<float>;
using VecD = std::vector<double>;

namespace {

// float vs double: the float kernels round every op to 24 bits; sums of up to ~600 terms and
// softmaxes over ≤ 300 entries keep the max error, relative to the max |value|, below ~2e-6
// (measured); 1e-5 leaves margin while a wrong formula is off by > 1e-2.
constexpr double kFloatTol = 1e-5;
// float kernels vs a plain float loop doing the same arithmetic in a possibly different order
// (vectorised sums, fused multiply-adds): a few ulp.
constexpr double kSameMathTol = 1e-6;

VecF random_f(size_t n, uint64_t seed, float scale = 1.0f) {
  Rng rng(seed);
  VecF v(n);
  for (auto& x : v) x = (rng.uniform() * 2.0f - 1.0f) * scale;
  return v;
}

VecD widen(const VecF& v) { return VecD(v.begin(), v.end()); }

// max |a - b| / max |b|.
template <typename A, typename B>
double rel_err(const std::vector<A>& a, const std::vector<B>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    ref = std::max(ref, std::abs(double(b[i])));
  }
  return diff / std::max(ref, 1e-30);
}

// Checks rel_err(a, b) < tol and prints the measured error (the numbers quoted in reviews).
#define EXPECT_REL(a, b, tol)                                                   \
  do {                                                                          \
    const double err_ = rel_err(a, b);                                          \
    std::cout << "[err] " #a " vs " #b ": " << err_ << " (tol " << (tol) << ")\n"; \
    EXPECT_LT(err_, tol);                                                       \
  } while (0)

Tensor tensor_f32(const VecF& v, Shape shape) { return Tensor::from_vector(v, std::move(shape)); }

Tensor tensor_f64(const VecF& v, Shape shape) {
  Tensor t = Tensor::zeros(std::move(shape), DType::F64);
  std::copy(v.begin(), v.end(), t.data<double>());
  return t;
}

Tensor tensor_bf16(const VecF& v, Shape shape) {
  Tensor t = Tensor::zeros(std::move(shape), DType::BF16);
  convert_f32_to_bf16(v.data(), t.data<uint16_t>(), v.size());
  return t;
}

// Rounds values to bf16 so that an f32 tensor and a bf16 tensor can hold the same numbers.
VecF bf16_rounded(VecF v) {
  round_to_bf16(v.data(), v.size());
  return v;
}

std::vector<float> llama_inv_freq(int64_t D) {
  std::vector<float> f(size_t(D / 2));
  for (int64_t i = 0; i < D / 2; ++i) f[size_t(i)] = 1.0f / std::pow(10000.0f, float(2 * i) / float(D));
  return f;
}

}  // namespace

TEST(TrainOps, RmsNormFloatMatchesDoubleAndLoop) {
  const int64_t N = 37, C = 576;
  const uint64_t seed = 1;
  SCOPED_TRACE("seed " + std::to_string(seed));
  VecF x = random_f(N * C, seed, 3.0f), w = random_f(C, seed + 1), dy = random_f(N * C, seed + 2);
  VecF y(N * C), rstd(N), y_inf(N * C), dx(N * C, 0.0f), dw(C, 0.0f);
  cpu::rmsnorm_forward<float>(x.data(), w.data(), y.data(), rstd.data(), N, C, 1e-5);
  for (int64_t n = 0; n < N; ++n) {  // HF: x * rsqrt(mean(x²) + eps) * w, the mean summed in double
    double sum = 0;
    for (int64_t c = 0; c < C; ++c) sum += double(x[size_t(n * C + c)]) * x[size_t(n * C + c)];
    const float inv = 1.0f / std::sqrt(float(sum / double(C)) + 1e-5f);
    for (int64_t c = 0; c < C; ++c) y_inf[size_t(n * C + c)] = x[size_t(n * C + c)] * inv * w[size_t(c)];
  }
  EXPECT_REL(y, y_inf, kSameMathTol);
  cpu::rmsnorm_backward<float>(dy.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(), N, C);

  VecD xd = widen(x), wd = widen(w), dyd = widen(dy), yd(N * C), rstdd(N), dxd(N * C, 0.0), dwd(C, 0.0);
  cpu::rmsnorm_forward<double>(xd.data(), wd.data(), yd.data(), rstdd.data(), N, C, 1e-5);
  cpu::rmsnorm_backward<double>(dyd.data(), xd.data(), wd.data(), rstdd.data(), dxd.data(), dwd.data(), N, C);
  EXPECT_REL(y, yd, kFloatTol);
  EXPECT_REL(rstd, rstdd, kFloatTol);
  EXPECT_REL(dx, dxd, kFloatTol);
  EXPECT_REL(dw, dwd, kFloatTol);
  // Frozen norm: dweight null is allowed.
  cpu::rmsnorm_backward<float>(dy.data(), x.data(), w.data(), rstd.data(), dx.data(), nullptr, N, C);
}

TEST(TrainOps, RopeFloatMatchesLoopAndInverts) {
  const int64_t N = 20, H = 3, D = 64;
  const uint64_t seed = 2;
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::vector<int64_t> positions(N);
  for (int64_t n = 0; n < N; ++n) positions[size_t(n)] = n * 37 + 3;
  const auto inv_freq = llama_inv_freq(D);
  VecF x = random_f(N * H * D, seed), y = x, y_inf = x;
  cpu::rope_forward<float>(y.data(), positions.data(), inv_freq.data(), N, H, D);
  for (int64_t n = 0; n < N; ++n)  // rotate_half: pairs (i, i + D/2), angles in f32
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < D / 2; ++i) {
        const float angle = float(positions[size_t(n)]) * inv_freq[size_t(i)];
        float* r = y_inf.data() + (n * H + h) * D;
        const float a = x[size_t((n * H + h) * D + i)], b = x[size_t((n * H + h) * D + i + D / 2)];
        r[i] = a * std::cos(angle) - b * std::sin(angle);
        r[i + D / 2] = b * std::cos(angle) + a * std::sin(angle);
      }
  EXPECT_REL(y, y_inf, kSameMathTol);
  VecD yd = widen(x);
  cpu::rope_forward<double>(yd.data(), positions.data(), inv_freq.data(), N, H, D);
  EXPECT_REL(y, yd, kFloatTol);
  // The backward is the inverse rotation: it brings y back to x.
  cpu::rope_backward<float>(y.data(), positions.data(), inv_freq.data(), N, H, D);
  EXPECT_REL(y, x, kFloatTol);
}

TEST(TrainOps, SwiGluFloatMatchesLoopAndDouble) {
  const int64_t n = 100000;  // above the OpenMP threshold
  const uint64_t seed = 3;
  SCOPED_TRACE("seed " + std::to_string(seed));
  VecF g = random_f(n, seed, 8.0f), u = random_f(n, seed + 1, 2.0f), dout = random_f(n, seed + 2);
  VecF out(n), out_inf(n), dg(n), du(n);
  cpu::swiglu_forward<float>(g.data(), u.data(), out.data(), n);
  for (int64_t i = 0; i < n; ++i) out_inf[size_t(i)] = g[size_t(i)] / (1.0f + std::exp(-g[size_t(i)])) * u[size_t(i)];
  EXPECT_REL(out, out_inf, kSameMathTol);
  cpu::swiglu_backward<float>(dout.data(), g.data(), u.data(), dg.data(), du.data(), n);
  VecD gd = widen(g), ud = widen(u), doutd = widen(dout), outd(n), dgd(n), dud(n);
  cpu::swiglu_forward<double>(gd.data(), ud.data(), outd.data(), n);
  cpu::swiglu_backward<double>(doutd.data(), gd.data(), ud.data(), dgd.data(), dud.data(), n);
  EXPECT_REL(out, outd, kFloatTol);
  EXPECT_REL(dg, dgd, kFloatTol);
  EXPECT_REL(du, dud, kFloatTol);
}

TEST(TrainOps, EmbeddingGathersAndScatters) {
  const int64_t V = 50, C = 96, N = 400;
  const uint64_t seed = 4;
  SCOPED_TRACE("seed " + std::to_string(seed));
  VecF table = bf16_rounded(random_f(V * C, seed));
  std::vector<int32_t> ids(N);
  Rng rng(seed + 1);
  for (auto& id : ids) id = int32_t(rng.next_u64() % uint64_t(V));
  for (const Tensor& t : {tensor_f32(table, {V, C}), tensor_bf16(table, {V, C})}) {
    VecF out(N * C), expect(N * C);
    cpu::embedding_forward<float>(t, ids.data(), N, out.data());
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) expect[size_t(n * C + c)] = table[size_t(ids[size_t(n)] * C + c)];
    EXPECT_EQ(out, expect) << t.describe();
  }
  VecD out_d(N * C);
  cpu::embedding_forward<double>(tensor_f64(table, {V, C}), ids.data(), N, out_d.data());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      ASSERT_EQ(out_d[size_t(n * C + c)], double(table[size_t(ids[size_t(n)] * C + c)]));

  // Backward: scatter-add with repeated ids vs a plain loop.
  VecF dout = random_f(N * C, seed + 2), dtable(V * C, 1.0f);
  VecD expect(V * C, 1.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) expect[size_t(ids[size_t(n)] * C + c)] += dout[size_t(n * C + c)];
  cpu::embedding_backward<float>(dout.data(), ids.data(), N, C, dtable.data());
  EXPECT_REL(dtable, expect, kFloatTol);

  std::vector<int32_t> bad = {0, int32_t(V)};
  VecF out2(2 * C);
  EXPECT_THROW(cpu::embedding_forward<float>(tensor_f32(table, {V, C}), bad.data(), 2, out2.data()), Error);
}

TEST(TrainOps, AddInplace) {
  VecF x = random_f(100000, 5), y = random_f(100000, 6), expect(x.size());
  for (size_t i = 0; i < x.size(); ++i) expect[i] = x[i] + y[i];
  cpu::add_inplace<float>(x.data(), y.data(), int64_t(x.size()));
  EXPECT_EQ(x, expect);
}

namespace {

// out (T, H, D) of causal GQA attention in double with an explicit mask, queries at positions
// [q_offset, q_offset + T) over keys [0, Tk): the definition, no blocking, no fast exp.
VecD reference_attention(const VecF& q, const VecF& k, const VecF& v, const AttentionShape& s) {
  const int64_t Tk = s.keys(), group = s.H / s.Hkv;
  VecD out(size_t(s.T * s.H * s.D), 0.0);
  for (int64_t t = 0; t < s.T; ++t)
    for (int64_t h = 0; h < s.H; ++h) {
      const int64_t pos = s.q_offset + t, kvh = h / group;
      std::vector<double> p(size_t(Tk), 0.0);
      double m = -1e300, sum = 0;
      for (int64_t j = 0; j < Tk; ++j) {
        if (j > pos || (s.window > 0 && pos - j >= s.window)) continue;
        double dot = 0;
        for (int64_t d = 0; d < s.D; ++d)
          dot += double(q[size_t((t * s.H + h) * s.D + d)]) * k[size_t((j * s.Hkv + kvh) * s.D + d)];
        p[size_t(j)] = dot / std::sqrt(double(s.D));
        m = std::max(m, p[size_t(j)]);
      }
      for (int64_t j = 0; j <= std::min(pos, Tk - 1); ++j) {
        if (s.window > 0 && pos - j >= s.window) continue;
        p[size_t(j)] = std::exp(p[size_t(j)] - m);
        sum += p[size_t(j)];
      }
      for (int64_t j = 0; j <= std::min(pos, Tk - 1); ++j) {
        if (s.window > 0 && pos - j >= s.window) continue;
        for (int64_t d = 0; d < s.D; ++d)
          out[size_t((t * s.H + h) * s.D + d)] += p[size_t(j)] / sum * v[size_t((j * s.Hkv + kvh) * s.D + d)];
      }
    }
  return out;
}

}  // namespace

TEST(TrainOps, AttentionForwardMatchesExplicitMask) {
  for (int64_t window : {0, 17}) {
    const AttentionShape s{1, 150, 6, 2, 32, window};
    const uint64_t seed = 7 + uint64_t(window);
    SCOPED_TRACE("window " + std::to_string(window) + " seed " + std::to_string(seed));
    const size_t nq = size_t(s.T * s.H * s.D), nkv = size_t(s.T * s.Hkv * s.D);
    VecF q = random_f(nq, seed, 2.0f), k = random_f(nkv, seed + 1, 2.0f), v = random_f(nkv, seed + 2);
    VecF out(nq), lse(size_t(s.H * s.T));
    cpu::attention_forward<float>(q.data(), k.data(), v.data(), nullptr, out.data(), lse.data(), s);
    EXPECT_REL(out, reference_attention(q, k, v, s), kFloatTol);
  }
}

// KV-cache decoding is the same kernel with queries offset by the cached positions: a prefill of
// 40 tokens then 1-token and 7-token steps over the growing cache equal one pass over all of them.
TEST(TrainOps, AttentionWithKvCacheEqualsOnePass) {
  for (int64_t window : {0, 9}) {
    const int64_t T = 60, H = 4, Hkv = 2, D = 16;
    const uint64_t seed = 30 + uint64_t(window);
    SCOPED_TRACE("window " + std::to_string(window) + " seed " + std::to_string(seed));
    VecF q = random_f(size_t(T * H * D), seed, 2.0f), k = random_f(size_t(T * Hkv * D), seed + 1, 2.0f);
    VecF v = random_f(size_t(T * Hkv * D), seed + 2);
    VecF full(q.size()), lse(size_t(H * T));
    const AttentionShape all{1, T, H, Hkv, D, window};
    cpu::attention_forward<float>(q.data(), k.data(), v.data(), nullptr, full.data(), lse.data(), all);
    VecF stepped(q.size());
    for (int64_t p0 = 0; p0 < T;) {
      const int64_t n = p0 == 0 ? 40 : p0 < 50 ? 1 : 7;
      const int64_t len = std::min(n, T - p0);
      AttentionShape s{1, len, H, Hkv, D, window};
      s.q_offset = p0, s.Tk = p0 + len;  // keys and values of every position so far
      cpu::attention_forward<float>(q.data() + p0 * H * D, k.data(), v.data(), nullptr, stepped.data() + p0 * H * D,
                                    nullptr, s);
      p0 += len;
    }
    EXPECT_REL(stepped, full, kSameMathTol);
    EXPECT_REL(stepped, reference_attention(q, k, v, all), kFloatTol);
  }
  // A query range the keys cannot hold is refused.
  VecF x(16 * 2);
  AttentionShape bad{1, 2, 1, 1, 16, 0};
  bad.q_offset = 3, bad.Tk = 4;
  EXPECT_THROW(cpu::attention_forward<float>(x.data(), x.data(), x.data(), nullptr, x.data(), nullptr, bad), Error);
}

TEST(TrainOps, AttentionFloatMatchesDouble) {
  // Two batches with packed segments and padding, GQA, window, T across three query blocks.
  const AttentionShape s{2, 150, 4, 2, 16, 40};
  const uint64_t seed = 8;
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::vector<int32_t> seg(size_t(s.B * s.T));
  for (int64_t t = 0; t < s.T; ++t) {
    seg[size_t(t)] = t < 70 ? 0 : t < 130 ? 1 : -1;
    seg[size_t(s.T + t)] = t < 10 ? 3 : 4;
  }
  const size_t nq = size_t(s.B * s.T * s.H * s.D), nkv = size_t(s.B * s.T * s.Hkv * s.D);
  VecF q = random_f(nq, seed, 2.0f), k = random_f(nkv, seed + 1, 2.0f), v = random_f(nkv, seed + 2);
  VecF dout = random_f(nq, seed + 3);
  VecF out(nq), lse(size_t(s.B * s.H * s.T)), dq(nq), dk(nkv), dv(nkv);
  cpu::attention_forward<float>(q.data(), k.data(), v.data(), seg.data(), out.data(), lse.data(), s);
  cpu::attention_backward<float>(dout.data(), q.data(), k.data(), v.data(), out.data(), lse.data(), seg.data(),
                                 dq.data(), dk.data(), dv.data(), s);
  VecD qd = widen(q), kd = widen(k), vd = widen(v), doutd = widen(dout);
  VecD outd(nq), lsed(lse.size()), dqd(nq), dkd(nkv), dvd(nkv);
  cpu::attention_forward<double>(qd.data(), kd.data(), vd.data(), seg.data(), outd.data(), lsed.data(), s);
  cpu::attention_backward<double>(doutd.data(), qd.data(), kd.data(), vd.data(), outd.data(), lsed.data(),
                                  seg.data(), dqd.data(), dkd.data(), dvd.data(), s);
  EXPECT_REL(out, outd, kFloatTol);
  EXPECT_REL(dq, dqd, kFloatTol);
  EXPECT_REL(dk, dkd, kFloatTol);
  EXPECT_REL(dv, dvd, kFloatTol);
  // lse: finite rows agree, padding rows are -inf in both.
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(lsed[i])) {
      EXPECT_TRUE(std::isinf(lse[i]) && lse[i] < 0) << i;
    } else {
      EXPECT_NEAR(lse[i], lsed[i], kFloatTol * std::max(1.0, std::abs(lsed[i]))) << i;
    }
  }
  AttentionShape bad = s;
  bad.Hkv = 3;
  EXPECT_THROW(cpu::attention_forward<float>(q.data(), k.data(), v.data(), nullptr, out.data(), lse.data(), bad),
               Error);
}

namespace {

// Plain-loop reference: loss per row = logsumexp(h·Wᵀ) - logit[target] in double.
VecD reference_ce(const VecF& h, const VecF& w, const std::vector<int32_t>& targets, int64_t C, int64_t V) {
  const int64_t N = int64_t(targets.size());
  VecD losses(N, 0.0);
  for (int64_t n = 0; n < N; ++n) {
    if (targets[size_t(n)] == -100) continue;
    VecD logits(V);
    double m = -INFINITY;
    for (int64_t v = 0; v < V; ++v) {
      double s = 0;
      for (int64_t c = 0; c < C; ++c) s += double(h[size_t(n * C + c)]) * w[size_t(v * C + c)];
      logits[size_t(v)] = s;
      m = std::max(m, s);
    }
    double sum = 0;
    for (double l : logits) sum += std::exp(l - m);
    losses[size_t(n)] = m + std::log(sum) - logits[size_t(targets[size_t(n)])];
  }
  return losses;
}

}  // namespace

TEST(TrainOps, CrossEntropyMatchesReferenceAndChunking) {
  const int64_t N = 23, C = 64, V = 300;  // V > 256: the bf16 head spans two widening panels
  const uint64_t seed = 9;
  SCOPED_TRACE("seed " + std::to_string(seed));
  VecF h = random_f(N * C, seed, 2.0f), w = bf16_rounded(random_f(V * C, seed + 1));
  std::vector<int32_t> targets(N);
  Rng rng(seed + 2);
  for (int64_t n = 0; n < N; ++n) targets[size_t(n)] = n % 4 == 1 ? -100 : int32_t(rng.next_u64() % uint64_t(V));
  const VecD ref = reference_ce(h, w, targets, C, V);
  double ref_sum = 0;
  for (double l : ref) ref_sum += l;

  const Tensor w32 = tensor_f32(w, {V, C}), w16 = tensor_bf16(w, {V, C});
  VecF row_losses(N);
  const auto fwd = cpu::cross_entropy_forward<float>(h.data(), w32, targets.data(), N, row_losses.data());
  EXPECT_EQ(fwd.count, N - N / 4 - (N % 4 > 1 ? 1 : 0));
  EXPECT_NEAR(fwd.loss_sum, ref_sum, kFloatTol * std::abs(ref_sum));
  EXPECT_REL(row_losses, ref, kFloatTol);

  // Gradients: chunks of 3 rows vs one chunk, f32 vs bf16 head, float vs double.
  const float scale = 0.25f;
  VecF dh_a(N * C), dw_a(V * C, 0.0f), dh_b(N * C), dw_b(V * C, 0.0f), dh_c(N * C), dw_c(V * C, 0.0f);
  const auto ra = cpu::cross_entropy_forward_backward<float>(h.data(), w32, targets.data(), N, scale, dh_a.data(),
                                                            dw_a.data(), 3);
  const auto rb = cpu::cross_entropy_forward_backward<float>(h.data(), w32, targets.data(), N, scale, dh_b.data(),
                                                            dw_b.data(), 256);
  const auto rc = cpu::cross_entropy_forward_backward<float>(h.data(), w16, targets.data(), N, scale, dh_c.data(),
                                                            dw_c.data(), 5);
  // Chunking changes how dW's f32 partial sums are grouped (and gemm blocking), not the math.
  EXPECT_NEAR(ra.loss_sum, rb.loss_sum, kSameMathTol * std::abs(ref_sum));
  EXPECT_NEAR(rc.loss_sum, rb.loss_sum, kSameMathTol * std::abs(ref_sum));
  EXPECT_REL(dh_a, dh_b, kFloatTol);
  EXPECT_REL(dw_a, dw_b, kFloatTol);
  EXPECT_REL(dh_c, dh_b, kFloatTol);
  EXPECT_REL(dw_c, dw_b, kFloatTol);

  VecD hd = widen(h), dhd(N * C), dwd(V * C, 0.0);
  const auto rd = cpu::cross_entropy_forward_backward<double>(hd.data(), tensor_f64(w, {V, C}), targets.data(), N,
                                                             double(scale), dhd.data(), dwd.data(), 7);
  EXPECT_NEAR(rd.loss_sum, ref_sum, 1e-9 * std::abs(ref_sum));
  EXPECT_REL(dh_b, dhd, kFloatTol);
  EXPECT_REL(dw_b, dwd, kFloatTol);

  // Ignored rows: zero dh rows, whatever dh held before; the others as before (same chunking).
  VecF dh_z(N * C, 3.0f);
  cpu::cross_entropy_forward_backward<float>(h.data(), w32, targets.data(), N, scale, dh_z.data(), nullptr, 256);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      if (targets[size_t(n)] == -100) {
        ASSERT_EQ(dh_z[size_t(n * C + c)], 0.0f) << "row " << n;
      } else {
        ASSERT_EQ(dh_z[size_t(n * C + c)], dh_b[size_t(n * C + c)]) << "row " << n;
      }
    }

  // All rows ignored: no loss, zero count, zero dh.
  std::vector<int32_t> none(N, -100);
  const auto r0 = cpu::cross_entropy_forward_backward<float>(h.data(), w32, none.data(), N, scale, dh_z.data(),
                                                            dw_a.data());
  EXPECT_EQ(r0.count, 0);
  EXPECT_EQ(r0.loss_sum, 0.0);
  for (float g : dh_z) ASSERT_EQ(g, 0.0f);
}

TEST(TrainOps, MatmulsFloatBf16AndDouble) {
  const int64_t M = 19, N = 600, K = 72;  // N spans three bf16 panels
  const uint64_t seed = 10;
  SCOPED_TRACE("seed " + std::to_string(seed));
  VecF x = random_f(M * K, seed), w = bf16_rounded(random_f(N * K, seed + 1)), dy = random_f(M * N, seed + 2);
  // Plain double loops.
  VecD y_ref(M * N, 0.0), dx_ref(M * K, 0.5), dw_ref(N * K, -1.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) {
        y_ref[size_t(m * N + n)] += double(x[size_t(m * K + k)]) * w[size_t(n * K + k)];
        dx_ref[size_t(m * K + k)] += double(dy[size_t(m * N + n)]) * w[size_t(n * K + k)];
        dw_ref[size_t(n * K + k)] += double(dy[size_t(m * N + n)]) * x[size_t(m * K + k)];
      }
  for (const Tensor& t : {tensor_f32(w, {N, K}), tensor_bf16(w, {N, K})}) {
    SCOPED_TRACE(t.describe());
    VecF y(M * N, 99.0f), dx(M * K, 0.5f), dw(N * K, -1.0f);
    cpu::matmul_xwt<float>(x.data(), t, y.data(), M);
    cpu::matmul_dy_w_acc<float>(dy.data(), t, dx.data(), M);
    cpu::matmul_dyt_x_acc<float>(dy.data(), x.data(), dw.data(), M, N, K);
    EXPECT_REL(y, y_ref, kFloatTol);
    EXPECT_REL(dx, dx_ref, kFloatTol);
    EXPECT_REL(dw, dw_ref, kFloatTol);
    // M = 1 (decode-like shapes) takes the same path.
    VecF y1(N);
    cpu::matmul_xwt<float>(x.data(), t, y1.data(), 1);
    EXPECT_LT(rel_err(y1, VecD(y_ref.begin(), y_ref.begin() + N)), kFloatTol);
  }
  VecD xd = widen(x), dyd = widen(dy), yd(M * N), dxd(M * K, 0.5), dwd(N * K, -1.0);
  const Tensor w64 = tensor_f64(w, {N, K});
  cpu::matmul_xwt<double>(xd.data(), w64, yd.data(), M);
  cpu::matmul_dy_w_acc<double>(dyd.data(), w64, dxd.data(), M);
  cpu::matmul_dyt_x_acc<double>(dyd.data(), xd.data(), dwd.data(), M, N, K);
  EXPECT_REL(yd, y_ref, 1e-12);
  EXPECT_REL(dxd, dx_ref, 1e-12);
  EXPECT_REL(dwd, dw_ref, 1e-12);
}

TEST(TrainOps, BadDtypesThrow) {
  const int64_t N = 4, K = 3;
  VecF w(N * K, 0.5f), xf(2 * K, 1.0f), yf(2 * N);
  VecD xd(2 * K, 1.0), yd(2 * N);
  const Tensor w64 = tensor_f64(w, {N, K}), w32 = tensor_f32(w, {N, K}), w16 = tensor_bf16(w, {N, K});
  EXPECT_THROW(cpu::matmul_xwt<float>(xf.data(), w64, yf.data(), 2), Error);
  EXPECT_THROW(cpu::matmul_dy_w_acc<float>(yf.data(), w64, xf.data(), 2), Error);
  EXPECT_THROW(cpu::matmul_xwt<double>(xd.data(), w32, yd.data(), 2), Error);
  EXPECT_THROW(cpu::matmul_xwt<double>(xd.data(), w16, yd.data(), 2), Error);
  EXPECT_THROW(cpu::matmul_xwt<float>(xf.data(), Tensor::zeros({N, K}, DType::F16), yf.data(), 2), Error);
  EXPECT_THROW(cpu::matmul_xwt<float>(xf.data(), w32.reshape({N * K}), yf.data(), 2), Error);
  std::vector<int32_t> ids = {0, 1};
  EXPECT_THROW(cpu::embedding_forward<float>(w64, ids.data(), 2, yf.data()), Error);
  std::vector<int32_t> targets = {1, 2};
  VecD dhd(2 * K);
  EXPECT_THROW(cpu::cross_entropy_forward_backward<double>(xd.data(), w16, targets.data(), 2, 1.0, dhd.data(),
                                                           nullptr),
               Error);
  std::vector<int32_t> bad_targets = {1, int32_t(N)};
  EXPECT_THROW(cpu::cross_entropy_forward<float>(xf.data(), w32, bad_targets.data(), 2), Error);
  EXPECT_THROW(cpu::cross_entropy_forward<float>(xf.data(), w32, targets.data(), 2, nullptr, 0), Error);
}
