// qmatmul_forward / qmatmul_backward_input vs a plain-loop double reference over the fully
// dequantized weight (dequantized here with a deliberately naive loop over the bitsandbytes layout).
// Seeded random codes and per-block absmax values (all distinct, so a wrong block or nibble shows);
// NF4 and FP4, with and without double quantization; K a multiple of 32/64 (aligned AVX-512 path),
// K even but not a multiple of 32 (blocks span rows), K odd (rows start on a low nibble), odd N
// (the forward kernel pairs rows); block sizes that are not multiples of 32; M = 1..16 (forward:
// direct kernels, in groups of 4 rows; backward: direct up to 4) and M = 17, 64 (dequantized
// tiles/panels + sgemm); shapes large enough for several tiles/panels and > 256 blocks (nested
// absmax index). Also cross-checked on a weight quantized by quantize_4bit against
// dequantize_4bit (quant/nf4.h).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "quant/codebooks.h"
#include "quant/nf4.h"
#include "backend/cpu/qmatmul.h"

using namespace qlora;
using cpu::qmatmul_backward_input;
using cpu::qmatmul_forward;

namespace {

Tensor random_bytes(int64_t n, Rng& rng) {
  Tensor t = Tensor::zeros({n}, DType::U8);
  for (int64_t i = 0; i < n; ++i) t.data<uint8_t>()[i] = uint8_t(rng.next_u64() >> 56);
  return t;
}

// The kernels sum K (or N) f32 products in some order; the dequantized weights are the same f32
// values as the reference's (table[c] * absmax, one rounding; the double-quant absmax may differ by
// one f32 rounding if the compiler contracts it into an FMA). The standard bound for any summation
// order is |computed - exact| <= n * u * sum |terms| with u = 2^-24 (Higham, gamma_n), plus 2u for
// the weight/absmax rounding; we allow n * 2^-23 * sum|terms|, i.e. 2x the rigorous worst case.
// A wrong nibble, block or row gives errors of order sum|terms| itself, far above this.
constexpr double kEpsF32 = 1.0 / 8388608.0;  // 2^-23

struct Case {
  QuantType type;
  bool double_quant;
  int64_t N, K, block_size;
};

std::string case_name(const Case& c, int64_t M) {
  return fmt::format("{} dq={} M={} N={} K={} block={}", c.type == QuantType::NF4 ? "nf4" : "fp4",
                     c.double_quant, M, c.N, c.K, c.block_size);
}

std::vector<float> random_vector(size_t n, Rng& rng, float lo, float hi) {
  std::vector<float> v(n);
  for (auto& x : v) x = lo + (hi - lo) * rng.uniform();
  return v;
}

QuantTensor random_quant(const Case& c, Rng& rng) {
  QuantTensor w;
  w.type = c.type;
  w.shape = {c.N, c.K};
  w.block_size = c.block_size;
  w.codes = random_bytes((w.numel() + 1) / 2, rng);
  w.code = code_4bit_tensor(c.type);
  const int64_t n_blocks = w.n_blocks();
  if (!c.double_quant) {
    w.absmax = Tensor::from_vector(random_vector(size_t(n_blocks), rng, 0.05f, 2.0f), {n_blocks});
  } else {
    w.double_quant = true;
    w.nested_block_size = 256;
    w.absmax_codes = random_bytes(n_blocks, rng);
    const int64_t n_nested = (n_blocks + 255) / 256;
    w.nested_absmax = Tensor::from_vector(random_vector(size_t(n_nested), rng, 0.1f, 1.0f), {n_nested});
    w.nested_code = dynamic_code_tensor();
    w.offset = 0.5f;  // dynamic map values are in [-1, 1], so absmax stays in [-0.5, 1.5]
  }
  return w;
}

// Naive dequantization straight from the layout description: element i = n*K + k sits in byte i/2,
// high nibble when i is even, and belongs to block i / block_size.
std::vector<float> reference_dequant(const QuantTensor& w) {
  const auto& table = code_4bit(w.type);
  std::vector<float> out(size_t(w.numel()));
  for (int64_t i = 0; i < w.numel(); ++i) {
    const int64_t block = i / w.block_size;
    float absmax = w.double_quant ? kDynamicCode[w.absmax_codes.data<uint8_t>()[block]] *
                                            w.nested_absmax.data<float>()[block / w.nested_block_size] +
                                        w.offset
                                  : w.absmax.data<float>()[block];
    const uint8_t byte = w.codes.data<uint8_t>()[i / 2];
    const int code = i % 2 == 0 ? byte >> 4 : byte & 0x0f;
    out[size_t(i)] = table[size_t(code)] * absmax;
  }
  return out;
}

void run_case(const Case& c, int64_t M, uint64_t seed) {
  SCOPED_TRACE(case_name(c, M) + fmt::format(" seed={}", seed));
  Rng rng(seed);
  const QuantTensor w = random_quant(c, rng);
  const std::vector<float> wf = reference_dequant(w);  // (N, K)
  const int64_t N = c.N, K = c.K;

  // Forward: y (M, N) = x (M, K) · Wᵀ.
  const std::vector<float> x = random_vector(size_t(M * K), rng, -1.0f, 1.0f);
  std::vector<float> y(size_t(M * N), NAN);
  qmatmul_forward(x.data(), w, y.data(), M);
  int bad = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double t = double(x[m * K + k]) * double(wf[n * K + k]);
        ref += t;
        mag += std::abs(t);
      }
      const double err = std::abs(double(y[m * N + n]) - ref);
      if (!(err <= double(K) * kEpsF32 * mag) && bad++ < 5)
        ADD_FAILURE() << "forward y[" << m << ", " << n << "] = " << y[m * N + n] << ", expected " << ref;
    }
  EXPECT_EQ(bad, 0) << "forward mismatches";

  // Backward: dx (M, K) = dy (M, N) · W.
  const std::vector<float> dy = random_vector(size_t(M * N), rng, -1.0f, 1.0f);
  std::vector<float> dx(size_t(M * K), NAN);
  qmatmul_backward_input(dy.data(), w, dx.data(), M);
  bad = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) {
      double ref = 0, mag = 0;
      for (int64_t n = 0; n < N; ++n) {
        const double t = double(dy[m * N + n]) * double(wf[n * K + k]);
        ref += t;
        mag += std::abs(t);
      }
      const double err = std::abs(double(dx[m * K + k]) - ref);
      if (!(err <= double(N) * kEpsF32 * mag) && bad++ < 5)
        ADD_FAILURE() << "backward dx[" << m << ", " << k << "] = " << dx[m * K + k] << ", expected " << ref;
    }
  EXPECT_EQ(bad, 0) << "backward mismatches";
}

const std::vector<Case> kShapes = {
    {QuantType::NF4, false, 64, 64, 64},     // one block per row
    {QuantType::NF4, false, 48, 96, 64},     // K % 32 == 0, K % 64 != 0: aligned path, blocks span rows
    {QuantType::NF4, false, 35, 96, 128},    // odd N: the unpaired last row starts mid-block
    {QuantType::NF4, false, 37, 100, 64},    // K % 32 != 0: generic path, blocks span rows
    {QuantType::NF4, false, 33, 75, 64},     // K odd: every other row starts on a low nibble
    {QuantType::NF4, false, 40, 576, 128},   // SmolLM2-135M width, block 128
    {QuantType::NF4, false, 29, 90, 48},     // block not a multiple of 32
    {QuantType::NF4, false, 1100, 480, 64},  // several forward tiles and backward panels; > 256 blocks
};

TEST(QMatmul, MatchesReferenceAllTypesAndShapes) {
  uint64_t seed = 20261123;
  for (QuantType type : {QuantType::NF4, QuantType::FP4})
    for (bool dq : {false, true})
      for (Case c : kShapes) {
        c.type = type;
        c.double_quant = dq;
        for (int64_t M : {1, 3, 4, 5, 16, 17, 64}) {
          if (c.N * c.K > 100000 && M != 1 && M != 5 && M != 64) continue;  // keep the big shape cheap
          run_case(c, M, seed++);
        }
      }
}

// A real quantized weight (gaussian-ish values through quantize_4bit, double quantization, K not a
// multiple of the block): our naive reference dequant and qmatmul must agree with dequantize_4bit.
TEST(QMatmul, AgreesWithDequantize4bit) {
  for (QuantType type : {QuantType::NF4, QuantType::FP4}) {
    const int64_t N = 70, K = 200, M = 3;
    Rng rng(11);
    std::vector<float> wf(size_t(N * K));
    for (auto& v : wf) v = (rng.uniform() + rng.uniform() + rng.uniform() - 1.5f) * 0.1f;
    const QuantTensor w = quantize_4bit(wf.data(), {N, K}, type, 64, /*double_quant=*/true);
    std::vector<float> theirs(size_t(N * K));
    dequantize_4bit(w, theirs.data());
    const std::vector<float> ours = reference_dequant(w);
    for (size_t i = 0; i < ours.size(); ++i)
      ASSERT_NEAR(ours[i], theirs[i], 1e-6f * std::abs(theirs[i]) + 1e-30f) << "element " << i;
    // The forward through qmatmul against the double reference over dequantize_4bit's weight.
    const std::vector<float> x = random_vector(size_t(M * K), rng, -1.0f, 1.0f);
    std::vector<float> y(size_t(M * N));
    qmatmul_forward(x.data(), w, y.data(), M);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double ref = 0, mag = 0;
        for (int64_t k = 0; k < K; ++k) {
          ref += double(x[m * K + k]) * theirs[n * K + k];
          mag += std::abs(double(x[m * K + k]) * theirs[n * K + k]);
        }
        EXPECT_NEAR(y[m * N + n], ref, double(K) * kEpsF32 * mag) << m << ", " << n;
      }
  }
}

TEST(QMatmul, DoubleQuantAbsmaxDecode) {
  Case c{QuantType::NF4, true, 300, 256, 64};  // 1200 blocks: nested index runs 0..4
  Rng rng(7);
  const QuantTensor w = random_quant(c, rng);
  const std::vector<float> absmax = block_absmax(w);  // the decode qmatmul's kernels inline
  ASSERT_EQ(int64_t(absmax.size()), w.n_blocks());
  for (int64_t i = 0; i < w.n_blocks(); ++i)
    EXPECT_NEAR(absmax[size_t(i)],
                kDynamicCode[w.absmax_codes.data<uint8_t>()[i]] * w.nested_absmax.data<float>()[i / 256] + w.offset,
                1e-6f);
}

TEST(QMatmul, ZeroRowsIsANoOp) {
  Rng rng(3);
  const QuantTensor w = random_quant({QuantType::NF4, false, 8, 64, 64}, rng);
  qmatmul_forward(static_cast<const float*>(nullptr), w, nullptr, 0);
  qmatmul_backward_input(nullptr, w, nullptr, 0);
}

TEST(QMatmul, RejectsInconsistentWeights) {
  Rng rng(5);
  const QuantTensor good = random_quant({QuantType::NF4, false, 8, 64, 64}, rng);
  std::vector<float> x(64), y(8);

  QuantTensor w = good;
  w.shape = {512};
  EXPECT_THROW(qmatmul_forward(x.data(), w, y.data(), 1), Error);
  w = good;
  w.codes = w.codes.slice_rows(0, 10);
  EXPECT_THROW(qmatmul_forward(x.data(), w, y.data(), 1), Error);
  w = good;
  w.absmax = w.absmax.slice_rows(0, 3);
  EXPECT_THROW(qmatmul_backward_input(y.data(), w, x.data(), 1), Error);
  w = good;
  w.double_quant = true;  // no absmax_codes / nested_absmax
  EXPECT_THROW(qmatmul_forward(x.data(), w, y.data(), 1), Error);
  w = good;
  w.code = Tensor();  // no code table
  EXPECT_THROW(qmatmul_forward(x.data(), w, y.data(), 1), Error);
  w = good;
  w.block_size = 0;
  EXPECT_THROW(qmatmul_forward(x.data(), w, y.data(), 1), Error);
  try {
    w = good;
    w.codes = w.codes.slice_rows(0, 10);
    qmatmul_forward(x.data(), w, y.data(), 1);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[qmatmul_forward]"), std::string::npos) << e.what();
  }
}

}  // namespace
