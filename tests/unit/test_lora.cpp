// LoRA config and the training Linear (src/lora): scale and rsLoRA scale, validate() naming the bad
// field, PEFT initialisation statistics and seeding, inverted dropout (determinism, thread-count
// independence, p = 0 is no dropout), float vs double, bf16 base vs f32 base, 4-bit base vs the
// dense dequantized weight, merged_weight vs forward, gradient accumulation and argument errors.
// Gradients themselves are checked by finite differences in tests/grad/test_lora_grads.cpp.
// Not tested (by construction instead): that a 4-bit base is never dequantized whole; the float path
// goes through qmatmul (tiled) and the double path dequantizes kQuantTileRows rows at a time.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
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

// float vs double on the same inputs: sgemm over K <= 128 terms of size ~1 gives ~1e-6 relative
// (to the largest entry) errors; 1e-5 leaves margin while a real difference (wrong mask, missing
// scale) is O(1).
constexpr double kFloatVsDoubleTol = 1e-5;
// The same f32 values reached through the bf16 panel-widening path and the plain f32 path: only the
// summation order can differ.
constexpr double kBf16PathTol = 1e-6;
// 4-bit base vs the dense dequantized weight, float: qmatmul and sgemm differ in summation order.
constexpr double kQuantVsDenseTol = 1e-5;
// The same, double: both see the identical f64 weight values, dgemm order only.
constexpr double kQuantVsDenseTolF64 = 1e-12;
// merged W·x vs the forward's base + scale·(x·Aᵀ)·Bᵀ in f32 (the merge itself is rounded once).
constexpr double kMergeTol = 1e-5;

std::vector<double> random_vector(size_t n, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  std::vector<double> v(n);
  // Values representable in f32, so float and double runs see identical inputs.
  for (auto& x : v) x = double(float((double(rng.uniform()) * 2.0 - 1.0) * scale));
  return v;
}

Tensor tensor_of(const std::vector<double>& v, Shape shape, DType dtype) {
  Tensor t = Tensor::zeros(std::move(shape), dtype);
  for (size_t i = 0; i < v.size(); ++i) switch (dtype) {
      case DType::F64: t.data<double>()[i] = v[i]; break;
      case DType::F32: t.data<float>()[i] = float(v[i]); break;
      case DType::BF16: t.data<uint16_t>()[i] = f32_to_bf16(float(v[i])); break;
      default: ADD_FAILURE() << "tensor_of: dtype";
    }
  return t;
}

template <typename T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

std::vector<double> to_double(const Tensor& t) {
  const Tensor d = t.to(DType::F64);
  return {d.data<double>(), d.data<double>() + d.numel()};
}

template <typename T>
std::vector<double> to_double(const std::vector<T>& v) {
  return {v.begin(), v.end()};
}

// max |a - b| / max |b|.
double rel_error(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0, ref = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    ref = std::max(ref, std::abs(b[i]));
  }
  return diff / std::max(ref, 1e-300);
}

// Random problem: base weight, bias, adapter (nonzero B), input and upstream gradient.
struct Problem {
  int64_t M, N, K, R;
  double dropout = 0.0;
  bool bias = true;
  bool train_weight = false;
  uint64_t seed = 1;
  std::vector<double> w, b, B, x, dy;

  Problem(int64_t m, int64_t n, int64_t k, int64_t r, uint64_t s) : M(m), N(n), K(k), R(r), seed(s) {
    w = random_vector(size_t(N * K), s + 1);
    b = random_vector(size_t(N), s + 2);
    B = random_vector(size_t(N * R), s + 3, 0.5);
    x = random_vector(size_t(M * K), s + 4);
    dy = random_vector(size_t(M * N), s + 5);
  }

  // base_dtype: F32 / BF16 / F64 dense, or quantized (the weight NF4-quantized, double quant on).
  Linear make(DType base_dtype, DType adapter_dtype, bool quantized = false, bool lora = true) const {
    Linear l;
    l.name = "model.layers.1.self_attn.v_proj";
    l.in = K;
    l.out = N;
    if (quantized) {
      const std::vector<float> wf = cast<float>(w);
      l.qweight = std::make_shared<QuantTensor>(quantize_4bit(wf.data(), {N, K}, QuantType::NF4, 64, true));
    } else {
      l.weight = tensor_of(w, {N, K}, base_dtype);
    }
    const DType grad_dtype = adapter_dtype;
    if (bias) l.bias = tensor_of(b, {N}, base_dtype == DType::F64 ? DType::F64 : DType::F32);
    if (train_weight) {
      l.train_weight = true;
      l.grad_weight = Tensor::zeros({N, K}, grad_dtype);
      if (bias) l.grad_bias = Tensor::zeros({N}, grad_dtype);
    }
    if (lora) {
      LoraConfig cfg;
      cfg.r = R;
      cfg.lora_alpha = 2.0 * double(R);
      cfg.lora_dropout = dropout;
      cfg.seed = seed;
      attach_lora(l, cfg, adapter_dtype);
      Tensor Bt = tensor_of(B, {N, R}, adapter_dtype);
      l.lora->B = Bt;
    }
    return l;
  }
};

template <typename T>
struct Outputs {
  std::vector<T> y, dx;
};

template <typename T>
Outputs<T> run(Linear& l, const Problem& p, bool training = true, uint64_t dropout_seed = 99, bool backward = true) {
  const std::vector<T> x = cast<T>(p.x), dy = cast<T>(p.dy);
  Outputs<T> r{std::vector<T>(size_t(p.M * p.N)), std::vector<T>(size_t(p.M * p.K))};
  LinearSaved saved;
  linear_forward<T>(cpu(), l, x.data(), r.y.data(), p.M, training, dropout_seed, &saved);
  if (backward) linear_backward<T>(cpu(), l, x.data(), dy.data(), r.dx.data(), saved, p.M);
  return r;
}

template <typename Fn>
void expect_error(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an Error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace

// ---- config ----

TEST(LoraConfig, ScaleAndRsLoraScale) {
  LoraConfig c;
  c.r = 8;
  c.lora_alpha = 16;
  EXPECT_DOUBLE_EQ(c.scale(), 2.0);
  c.use_rslora = true;
  EXPECT_DOUBLE_EQ(c.scale(), 16.0 / std::sqrt(8.0));
  c.r = 64;
  c.lora_alpha = 8;
  EXPECT_DOUBLE_EQ(c.scale(), 1.0);
}

TEST(LoraConfig, ValidateNamesTheField) {
  EXPECT_NO_THROW(LoraConfig{}.validate());
  auto bad = [](auto change, const std::string& field) {
    LoraConfig c;
    change(c);
    expect_error([&] { c.validate(); }, field);
  };
  bad([](LoraConfig& c) { c.r = 0; }, "r (the adapter rank)");
  bad([](LoraConfig& c) { c.lora_alpha = 0; }, "lora_alpha");
  bad([](LoraConfig& c) { c.lora_alpha = NAN; }, "lora_alpha");
  bad([](LoraConfig& c) { c.lora_dropout = 1.0; }, "lora_dropout");
  bad([](LoraConfig& c) { c.lora_dropout = -0.1; }, "lora_dropout");
  bad([](LoraConfig& c) { c.lora_dropout = NAN; }, "lora_dropout");
  bad([](LoraConfig& c) { c.target_modules = {"q_proj", "qkv_proj"}; }, "target_modules: unknown module 'qkv_proj'");
  bad([](LoraConfig& c) { c.target_modules.clear(); }, "target_modules is empty");
}

TEST(LoraConfig, Targets) {
  LoraConfig c;
  c.target_modules = {"q_proj", "down_proj"};
  EXPECT_TRUE(c.targets("q_proj"));
  EXPECT_TRUE(c.targets("down_proj"));
  EXPECT_TRUE(c.targets("model.layers.3.self_attn.q_proj"));
  EXPECT_FALSE(c.targets("k_proj"));
  EXPECT_FALSE(c.targets("model.layers.3.mlp.up_proj"));
  EXPECT_FALSE(c.targets("lm_head"));
}

// ---- initialisation ----

TEST(LoraInit, PeftStatistics) {
  const int64_t K = 1024, N = 64, R = 16;
  Linear l;
  l.name = "model.layers.0.self_attn.q_proj";
  l.in = K;
  l.out = N;
  l.weight = Tensor::zeros({N, K});
  LoraConfig cfg;
  cfg.r = R;
  cfg.seed = 3;
  attach_lora(l, cfg);
  const LoraAdapter& a = *l.lora;
  ASSERT_EQ(a.A.shape(), (Shape{R, K}));
  ASSERT_EQ(a.B.shape(), (Shape{N, R}));
  EXPECT_EQ(a.A.dtype(), DType::F32);
  EXPECT_DOUBLE_EQ(a.scale, 1.0);  // alpha 16 / r 16
  EXPECT_EQ(a.dropout, cfg.lora_dropout);
  const double bound = 1.0 / std::sqrt(double(K));
  const std::vector<double> A = to_double(a.A);
  double sum = 0, sum2 = 0;
  for (double v : A) {
    ASSERT_LE(std::abs(v), bound);
    sum += v;
    sum2 += v * v;
  }
  const double n = double(A.size()), mean = sum / n, var = sum2 / n - mean * mean;
  // U(-b, b): mean 0 with standard error b/√(3n); variance b²/3 = 1/(3K) with relative standard
  // error √(4/5 / n) ≈ 0.7% at n = 16384. Bounds at ~5 standard errors.
  EXPECT_LT(std::abs(mean), 5 * bound / std::sqrt(3 * n)) << "mean " << mean;
  EXPECT_NEAR(var * 3.0 * double(K), 1.0, 0.035) << "variance " << var;
  for (double v : to_double(a.B)) ASSERT_EQ(v, 0.0);
  for (double v : to_double(a.grad_A)) ASSERT_EQ(v, 0.0);
  for (double v : to_double(a.grad_B)) ASSERT_EQ(v, 0.0);
  EXPECT_EQ(a.grad_A.shape(), a.A.shape());
  EXPECT_EQ(a.grad_B.shape(), a.B.shape());
}

namespace {
std::vector<double> init_A(const std::string& name, uint64_t seed, DType dtype = DType::F32,
                           std::vector<std::string> targets = {"q_proj"}) {
  Linear l;
  l.name = name;
  l.in = 96;
  l.out = 32;
  LoraConfig cfg;
  cfg.r = 4;
  cfg.seed = seed;
  cfg.target_modules = std::move(targets);
  attach_lora(l, cfg, dtype);
  return to_double(l.lora->A);
}
}  // namespace

TEST(LoraInit, SeededByConfigSeedAndModuleName) {
  const std::string q = "model.layers.0.self_attn.q_proj", k = "model.layers.0.self_attn.k_proj";
  EXPECT_EQ(init_A(q, 7), init_A(q, 7));
  EXPECT_NE(init_A(q, 7), init_A(k, 7));
  EXPECT_NE(init_A(q, 7), init_A(q, 8));
  EXPECT_NE(init_A(q, 7), init_A("model.layers.1.self_attn.q_proj", 7));
  // The f32 adapter is the f64 one rounded.
  const std::vector<double> a32 = init_A(q, 7, DType::F32), a64 = init_A(q, 7, DType::F64);
  for (size_t i = 0; i < a32.size(); ++i) ASSERT_EQ(a32[i], double(float(a64[i])));
}

TEST(LoraInit, OtherTargetsDoNotChangeAModule) {
  // Attach over one block's linears in model order, as the model does, under two target lists.
  const std::vector<std::string> all = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  auto attach_block = [&](const std::vector<std::string>& targets) {
    LoraConfig cfg;
    cfg.r = 4;
    cfg.seed = 11;
    cfg.target_modules = targets;
    std::vector<std::vector<double>> As;
    for (const auto& m : all) {
      Linear l;
      l.name = "model.layers.2." + m;
      l.in = 64;
      l.out = 48;
      if (!cfg.targets(m)) {
        As.emplace_back();
        continue;
      }
      attach_lora(l, cfg);
      As.push_back(to_double(l.lora->A));
    }
    return As;
  };
  const auto few = attach_block({"v_proj", "down_proj"}), many = attach_block(all);
  EXPECT_TRUE(few[0].empty());
  EXPECT_EQ(few[2], many[2]) << "v_proj";
  EXPECT_EQ(few[6], many[6]) << "down_proj";
}

TEST(LoraInit, RejectsBadArguments) {
  Linear l;
  l.name = "x";
  l.in = 8;
  l.out = 8;
  expect_error([&] { attach_lora(l, LoraConfig{}, DType::BF16); }, "adapter dtype bf16");
  LoraConfig bad;
  bad.r = 0;
  expect_error([&] { attach_lora(l, bad); }, "r (the adapter rank)");
  Linear empty;
  expect_error([&] { attach_lora(empty, LoraConfig{}); }, "in and out features");
}

// ---- dropout ----

TEST(LoraDropout, InvertedMaskDeterministicAndThreadIndependent) {
  // A = identity (R = K) makes the saved xa equal to dropout(x).
  const int64_t M = 1024, K = 128, N = 8;
  const double p = 0.3;
  Problem pr(M, N, K, K, 21);
  pr.dropout = p;
  Linear l = pr.make(DType::F32, DType::F32);
  float* A = l.lora->A.data<float>();
  for (int64_t i = 0; i < K * K; ++i) A[i] = (i / K == i % K) ? 1.0f : 0.0f;
  const std::vector<float> x = cast<float>(pr.x);
  std::vector<float> y(size_t(M * N));

  auto xa_for = [&](uint64_t seed, const Linear& lin) {
    LinearSaved s;
    linear_forward<float>(cpu(), lin, x.data(), y.data(), M, true, seed, &s);
    EXPECT_EQ(s.dropout_seed, seed);
    const float* v = s.xa.data<float>();
    return std::vector<float>(v, v + M * K);
  };
  const std::vector<float> xd = xa_for(5, l);
  const float inv_keep = float(1.0 / (1.0 - p));
  int64_t dropped = 0;
  for (int64_t i = 0; i < M * K; ++i) {
    if (xd[size_t(i)] == 0.0f) {
      ++dropped;
    } else {
      ASSERT_EQ(xd[size_t(i)], x[size_t(i)] * inv_keep) << "element " << i;
    }
  }
  // Binomial: standard error √(p(1-p)/n) = 0.0013 at n = 131072; 0.01 is ~8 of them.
  EXPECT_NEAR(double(dropped) / double(M * K), p, 0.01);

  EXPECT_EQ(xa_for(5, l), xd) << "same seed, same mask";
  EXPECT_NE(xa_for(6, l), xd) << "another seed, another mask";
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<float> one_thread = xa_for(5, l);
  omp_set_num_threads(threads);
  EXPECT_EQ(one_thread, xd) << "mask must not depend on the thread count";
  // Another module reading the same x with the same dropout seed draws its own mask (PEFT has one
  // nn.Dropout per module).
  Linear other = pr.make(DType::F32, DType::F32);
  other.name = "model.layers.1.self_attn.k_proj";
  other.lora->A = l.lora->A;
  EXPECT_NE(xa_for(5, other), xd);
}

TEST(LoraDropout, ZeroProbabilityAndEvaluationAreNoDropout) {
  Problem pr(16, 24, 40, 4, 31);
  Linear none = pr.make(DType::F32, DType::F32);  // dropout 0
  pr.dropout = 0.5;
  Linear drop = pr.make(DType::F32, DType::F32);
  const std::vector<float> y_none_train = run<float>(none, pr, true, 3, false).y;
  const std::vector<float> y_none_eval = run<float>(none, pr, false, 3, false).y;
  const std::vector<float> y_drop_eval = run<float>(drop, pr, false, 3, false).y;
  const std::vector<float> y_drop_train = run<float>(drop, pr, true, 3, false).y;
  EXPECT_EQ(y_none_train, y_none_eval);
  EXPECT_EQ(y_drop_eval, y_none_eval) << "training = false ignores dropout";
  EXPECT_NE(y_drop_train, y_none_train) << "p = 0.5 while training changes the output";
}

// ---- precision and base kinds ----

TEST(LoraLinear, FloatMatchesDouble) {
  Problem pr(33, 80, 96, 8, 41);
  pr.dropout = 0.2;
  pr.train_weight = true;
  Linear lf = pr.make(DType::F32, DType::F32), ld = pr.make(DType::F64, DType::F64);
  const Outputs<float> rf = run<float>(lf, pr);
  const Outputs<double> rd = run<double>(ld, pr);
  const double e_y = rel_error(to_double(rf.y), to_double(rd.y)), e_dx = rel_error(to_double(rf.dx), to_double(rd.dx));
  const double e_a = rel_error(to_double(lf.lora->grad_A), to_double(ld.lora->grad_A));
  const double e_b = rel_error(to_double(lf.lora->grad_B), to_double(ld.lora->grad_B));
  const double e_w = rel_error(to_double(lf.grad_weight), to_double(ld.grad_weight));
  const double e_bias = rel_error(to_double(lf.grad_bias), to_double(ld.grad_bias));
  std::printf("float vs double: y %.2e dx %.2e dA %.2e dB %.2e dW %.2e dbias %.2e\n", e_y, e_dx, e_a, e_b, e_w, e_bias);
  EXPECT_LT(e_y, kFloatVsDoubleTol);
  EXPECT_LT(e_dx, kFloatVsDoubleTol);
  EXPECT_LT(e_a, kFloatVsDoubleTol);
  EXPECT_LT(e_b, kFloatVsDoubleTol);
  EXPECT_LT(e_w, kFloatVsDoubleTol);
  EXPECT_LT(e_bias, kFloatVsDoubleTol);
}

TEST(LoraLinear, Bf16BaseMatchesF32BaseWithRoundedValues) {
  Problem pr(17, 300, 64, 4, 51);  // N > 256: more than one widened panel
  for (auto& v : pr.w) v = double(bf16_to_f32(f32_to_bf16(float(v))));
  Linear l16 = pr.make(DType::BF16, DType::F32), l32 = pr.make(DType::F32, DType::F32);
  const Outputs<float> r16 = run<float>(l16, pr), r32 = run<float>(l32, pr);
  const double e_y = rel_error(to_double(r16.y), to_double(r32.y));
  const double e_dx = rel_error(to_double(r16.dx), to_double(r32.dx));
  std::printf("bf16 vs f32 base: y %.2e dx %.2e\n", e_y, e_dx);
  EXPECT_LT(e_y, kBf16PathTol);
  EXPECT_LT(e_dx, kBf16PathTol);
  EXPECT_LT(rel_error(to_double(l16.lora->grad_A), to_double(l32.lora->grad_A)), kBf16PathTol);
}

class QuantBaseTest : public ::testing::TestWithParam<int64_t> {};

// The 4-bit base against a dense base holding the dequantized weight. M spans qmatmul's direct
// path (M <= 4 in backward, <= 16 forward), its tiled path, and (2100 > 2048) two backward chunks.
TEST_P(QuantBaseTest, MatchesDenseDequantizedWeight) {
  const int64_t M = GetParam();
  SCOPED_TRACE("M " + std::to_string(M));
  Problem pr(M, 64, 128, 4, 61 + uint64_t(M));
  pr.dropout = 0.1;
  Linear q32 = pr.make(DType::F32, DType::F32, true);
  // The dense twin: the exact f32 values the 4-bit weight stands for.
  Problem dense = pr;
  dense.w = to_double(dequantize_4bit(*q32.qweight, DType::F32));
  Linear d32 = dense.make(DType::F32, DType::F32);
  const Outputs<float> rq = run<float>(q32, pr), rd = run<float>(d32, dense);
  const double e_y = rel_error(to_double(rq.y), to_double(rd.y)), e_dx = rel_error(to_double(rq.dx), to_double(rd.dx));
  std::printf("M %ld 4-bit vs dense f32: y %.2e dx %.2e\n", long(M), e_y, e_dx);
  EXPECT_LT(e_y, kQuantVsDenseTol);
  EXPECT_LT(e_dx, kQuantVsDenseTol);
  EXPECT_LT(rel_error(to_double(q32.lora->grad_A), to_double(d32.lora->grad_A)), kQuantVsDenseTol);

  Linear q64 = pr.make(DType::F64, DType::F64, true), d64 = dense.make(DType::F64, DType::F64);
  const Outputs<double> sq = run<double>(q64, pr), sd = run<double>(d64, dense);
  const double e_y64 = rel_error(to_double(sq.y), to_double(sd.y));
  const double e_dx64 = rel_error(to_double(sq.dx), to_double(sd.dx));
  std::printf("M %ld 4-bit vs dense f64: y %.2e dx %.2e\n", long(M), e_y64, e_dx64);
  EXPECT_LT(e_y64, kQuantVsDenseTolF64);
  EXPECT_LT(e_dx64, kQuantVsDenseTolF64);
}

INSTANTIATE_TEST_SUITE_P(Rows, QuantBaseTest, ::testing::Values(int64_t(3), int64_t(40), int64_t(2100)));

// merged_weight · x (+ bias) reproduces the forward without dropout, for every base kind.
TEST(LoraLinear, MergedWeightReproducesForward) {
  struct Kind {
    const char* label;
    DType base;
    bool quantized;
  };
  for (const Kind& k : {Kind{"f32", DType::F32, false}, Kind{"bf16", DType::BF16, false},
                        Kind{"f64", DType::F64, false}, Kind{"nf4", DType::F32, true}}) {
    SCOPED_TRACE(k.label);
    Problem pr(9, 40, 64, 4, 71);
    pr.dropout = 0.25;  // inactive: evaluation forward
    const DType adapter = k.base == DType::F64 ? DType::F64 : DType::F32;
    Linear l = pr.make(k.base, adapter, k.quantized);
    std::vector<double> y;
    if (adapter == DType::F64)
      y = to_double(run<double>(l, pr, false, 0, false).y);
    else
      y = to_double(run<float>(l, pr, false, 0, false).y);
    const Tensor w = merged_weight(cpu(), l);
    ASSERT_EQ(w.dtype(), DType::F32);
    ASSERT_EQ(w.shape(), (Shape{pr.N, pr.K}));
    std::vector<double> ref(size_t(pr.M * pr.N));
    for (int64_t m = 0; m < pr.M; ++m)
      for (int64_t n = 0; n < pr.N; ++n) {
        double s = pr.b[size_t(n)];
        for (int64_t i = 0; i < pr.K; ++i) s += pr.x[size_t(m * pr.K + i)] * double(w.data<float>()[n * pr.K + i]);
        ref[size_t(m * pr.N + n)] = s;
      }
    const double e = rel_error(y, ref);
    std::printf("merged %s: %.2e\n", k.label, e);
    EXPECT_LT(e, kMergeTol);
  }
  // Without an adapter the merge is the base itself, copied (not aliased).
  Problem pr(2, 8, 16, 2, 72);
  Linear plain = pr.make(DType::F32, DType::F32, false, false);
  Tensor w = merged_weight(cpu(), plain);
  EXPECT_EQ(to_double(w), to_double(plain.weight));
  w.data<float>()[0] += 1.0f;
  EXPECT_NE(to_double(w), to_double(plain.weight));
}

TEST(LoraLinear, BackwardAccumulates) {
  Problem pr(12, 20, 32, 4, 81);
  pr.train_weight = true;
  Linear l = pr.make(DType::F32, DType::F32);
  run<float>(l, pr);
  const std::vector<double> a1 = to_double(l.lora->grad_A), b1 = to_double(l.lora->grad_B),
                            w1 = to_double(l.grad_weight), c1 = to_double(l.grad_bias);
  run<float>(l, pr);
  auto twice = [](std::vector<double> v) {
    for (auto& x : v) x *= 2;
    return v;
  };
  // Adding the same f32 value again: 1e-6 covers a re-ordered (fma) accumulation.
  EXPECT_LT(rel_error(to_double(l.lora->grad_A), twice(a1)), 1e-6);
  EXPECT_LT(rel_error(to_double(l.lora->grad_B), twice(b1)), 1e-6);
  EXPECT_LT(rel_error(to_double(l.grad_weight), twice(w1)), 1e-6);
  EXPECT_LT(rel_error(to_double(l.grad_bias), twice(c1)), 1e-6);
}

TEST(LoraLinear, NoRowsIsANoOp) {
  Problem pr(0, 8, 16, 2, 91);
  Linear l = pr.make(DType::F32, DType::F32);
  EXPECT_NO_THROW(run<float>(l, pr));
}

TEST(LoraLinear, ErrorsNameTheProblem) {
  Problem pr(4, 8, 16, 2, 101);
  {
    Linear l = pr.make(DType::F32, DType::F32);
    expect_error([&] { run<double>(l, pr); }, "x is f64 but the weight is f32");
  }
  {
    Linear l = pr.make(DType::F64, DType::F32);
    expect_error([&] { run<double>(l, pr); }, "attach_lora with dtype f64");
  }
  {
    Linear l = pr.make(DType::F32, DType::F32);
    l.weight = Tensor::zeros({pr.N, pr.K + 1});
    expect_error([&] { run<float>(l, pr); }, "expected (O, K) = (8, 16)");
  }
  {
    Linear l = pr.make(DType::F32, DType::F32);
    l.train_weight = true;  // no grad_weight allocated
    expect_error([&] { run<float>(l, pr); }, "grad_weight is undefined");
  }
  {
    Linear l = pr.make(DType::F32, DType::F32, true);
    l.train_weight = true;
    l.grad_weight = Tensor::zeros({pr.N, pr.K});
    expect_error([&] { run<float>(l, pr); }, "frozen 4-bit weight");
  }
  {
    Linear l = pr.make(DType::F32, DType::F32);
    const std::vector<float> x = cast<float>(pr.x), dy = cast<float>(pr.dy);
    std::vector<float> dx(x.size());
    expect_error([&] { linear_backward<float>(cpu(), l, x.data(), dy.data(), dx.data(), LinearSaved{}, pr.M); }, "saved xa");
  }
  {
    Linear l = pr.make(DType::F32, DType::F32);
    l.bias = Tensor::zeros({pr.N + 1});
    expect_error([&] { run<float>(l, pr); }, "bias is f32 (9)");
  }
}
