// Golden logits: our CPU forward pass against Hugging Face transformers (eager attention, fp32),
// on every fixture under tests/golden/fixtures/ (made by tests/golden/make_goldens.py, which also
// records the package versions in fixtures/versions.json). Covers: the real stories260K converted to
// an HF folder, and the same model loaded from its llama2.c .bin and its GGUF (q/k un-permutation);
// small random Llama (GQA, tied head, head_dim != C/H, Llama-3 rope_scaling, bf16 weights), Qwen2
// (q/k/v biases), Qwen3 (per-head q/k RMSNorm, explicit head_dim) and Mistral (with and without a sliding window shorter than the prompt);
// SmolLM2-135M-Instruct Q4_1 GGUF when models/ has it; bf16 compute; KV-cache decoding.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "model/loader.h"
#include "test_paths.h"

namespace qlora {
namespace {

// Dimension legend: T sequence, V vocab.

// fp32 end to end on both sides (bf16 fixture: bf16 weights widened exactly to f32), so the only
// differences are summation order (BLAS blocking, attention/softmax loops). make_goldens.py measured
// transformers-fp32 vs transformers-fp64 at 2e-6..2e-5 on these fixtures (|logits| <= 21); we observe
// 1e-6..1e-5. 1e-4 leaves ~5x headroom over the worst case yet catches any real bug (a wrong RoPE
// pairing, eps, bias or mask moves logits by 1e-2..1).
constexpr float kFp32Tol = 1e-4f;
// SmolLM2-135M: 30 layers, hidden 576, logits up to ~25; still fp32 end to end, but both sides
// dequantize Q4_1/Q8_0 (d*q + m in f32: a fused multiply-add may differ by 1 ulp per weight) and
// every layer adds summation-order noise. Observed 6e-5 (x86-64 AVX-512, OpenBLAS); 1e-3 leaves room
// for other BLAS/CPU summation orders and is still far below a real bug (>= 1e-2).
constexpr float kSmolLM2Tol = 1e-3f;
// bf16 compute: activations rounded to bf16 (8 mantissa bits, relative step 2^-8 = 0.4%) between
// ops, through 5 layers of stories260K whose logits reach |21|. Allowed: 3% of the largest |logit|
// (observed about 1%), and the argmax equal wherever transformers' top-1/top-2 gap exceeds that.
constexpr float kBf16RelTol = 0.03f;
// KV-cache decoding vs one forward_sequence: the same kernels on row blocks of different height, so
// only GEMM blocking (gemv vs gemm) changes the sums. An f32 ulp at |logit| 16..32 is 1.9e-6;
// observed 1.4e-5 (~8 ulp) on stories260K, 2e-6 on the small models.
constexpr float kKvCacheTol = 5e-5f;

struct GoldenPrompt {
  std::vector<int32_t> ids;  // (T)
  Tensor logits;             // (T, V) f32
};

std::string fixture_path(const std::string& name) { return test::source_path("tests/golden/fixtures/" + name); }

std::vector<int32_t> ids_from(const Tensor& t) {
  EXPECT_EQ(t.dtype(), DType::I64);
  std::vector<int32_t> ids(size_t(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) ids[size_t(i)] = int32_t(t.data<int64_t>()[i]);
  return ids;
}

// input_ids_<k>, logits_<k> for k = 0, 1, ...
std::vector<GoldenPrompt> read_goldens(const std::string& fixture) {
  SafetensorsFile f = SafetensorsFile::open(fixture_path(fixture + "/golden_logits.safetensors"));
  std::vector<GoldenPrompt> out;
  for (int k = 0; f.contains("input_ids_" + std::to_string(k)); ++k) {
    GoldenPrompt p{ids_from(f.get("input_ids_" + std::to_string(k))), f.get("logits_" + std::to_string(k))};
    EXPECT_EQ(p.logits.dtype(), DType::F32);
    EXPECT_EQ(p.logits.ndim(), 2);
    EXPECT_EQ(p.logits.dim(0), int64_t(p.ids.size()));
    out.push_back(std::move(p));
  }
  EXPECT_FALSE(out.empty()) << fixture << ": no input_ids_0 in the golden file";
  return out;
}

int64_t argmax_row(const float* row, int64_t n) { return int64_t(std::max_element(row, row + n) - row); }

float top2_gap_row(const float* row, int64_t n) {
  float a = -INFINITY, b = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    if (row[j] > a) {
      b = a;
      a = row[j];
    } else if (row[j] > b) {
      b = row[j];
    }
  }
  return a - b;
}

struct Comparison {
  float max_abs_err = 0;
  int64_t worst_row = -1, worst_col = -1;
  std::vector<int64_t> argmax_mismatch_rows;  // rows whose golden top-2 gap exceeds the margin
};

// got and want (T, V) f32. Argmax compared only where the golden's top-1/top-2 gap > argmax_margin.
Comparison compare_logits(const Tensor& got, const Tensor& want, float argmax_margin) {
  Comparison c;
  EXPECT_EQ(got.dtype(), DType::F32);
  EXPECT_EQ(got.shape(), want.shape()) << "got " << got.describe() << ", want " << want.describe();
  if (got.shape() != want.shape()) {
    c.max_abs_err = INFINITY;
    return c;
  }
  const int64_t T = want.dim(0), V = want.dim(1);
  for (int64_t t = 0; t < T; ++t) {
    const float* g = got.data<float>() + t * V;
    const float* w = want.data<float>() + t * V;
    for (int64_t j = 0; j < V; ++j) {
      const float e = std::fabs(g[j] - w[j]);
      if (!(e <= c.max_abs_err)) {  // NaN counts as the worst
        c.max_abs_err = std::isnan(e) ? INFINITY : e;
        c.worst_row = t, c.worst_col = j;
      }
    }
    if (top2_gap_row(w, V) > argmax_margin && argmax_row(g, V) != argmax_row(w, V))
      c.argmax_mismatch_rows.push_back(t);
  }
  return c;
}

float max_abs(const Tensor& t) {
  float m = 0;
  for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::fabs(t.data<float>()[i]));
  return m;
}

std::string rows_str(const std::vector<int64_t>& rows) {
  std::string s;
  for (int64_t r : rows) s += (s.empty() ? "" : ",") + std::to_string(r);
  return "[" + s + "]";
}

// Runs every golden prompt of `fixture` through `model`; fp32 tolerance, argmax equal.
// Returns the largest error seen.
float expect_matches_goldens(const LlamaModel& model, const std::string& fixture, const std::string& label,
                             float tol) {
  float worst = 0;
  const std::vector<GoldenPrompt> prompts = read_goldens(fixture);
  for (size_t k = 0; k < prompts.size(); ++k) {
    const GoldenPrompt& p = prompts[k];
    Tensor got = model.forward_sequence(p.ids);  // (T, V)
    // make_goldens.py guarantees golden top-2 gaps >= 1e-3 > tol, so every argmax is checked.
    Comparison c = compare_logits(got, p.logits, tol);
    worst = std::max(worst, c.max_abs_err);
    std::printf("[golden] %-28s prompt %zu  T=%-3zu max_abs_err %.3g (tol %.0e, max |logit| %.2f)\n",
                label.c_str(), k, p.ids.size(), double(c.max_abs_err), double(tol), double(max_abs(p.logits)));
    EXPECT_LE(c.max_abs_err, tol) << label << " prompt " << k << ": worst at position " << c.worst_row
                                  << ", vocab column " << c.worst_col;
    EXPECT_TRUE(c.argmax_mismatch_rows.empty())
        << label << " prompt " << k << ": argmax differs at positions " << rows_str(c.argmax_mismatch_rows);
  }
  return worst;
}

// ---------------------------------------------------------------------------------------------
// Every fixture folder (config.json + model.safetensors) through load_model, fp32.

class GoldenLogits : public ::testing::TestWithParam<const char*> {};

TEST_P(GoldenLogits, Fp32ForwardMatchesTransformers) {
  const std::string fixture = GetParam();
  LlamaModel model(load_model(fixture_path(fixture)));
  expect_matches_goldens(model, fixture, fixture, kFp32Tol);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenLogits,
                         ::testing::Values("stories260k-hf", "llama-gqa", "llama-tied", "qwen2", "llama3-rope",
                                           "mistral", "mistral-swa", "llama-bf16", "llama-headdim", "qwen3", "mixtral",
                                           "qwen3-moe"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string s = info.param;
                           std::replace(s.begin(), s.end(), '-', '_');
                           return s;
                         });

// The bf16 fixture keeps its weights bf16 when asked to, and computes the same logits (bf16 -> f32
// widening is exact, so the f32 goldens still hold at fp32 tolerance).
TEST(GoldenLogitsBf16Weights, HeldAsBf16MatchesTransformers) {
  LoadOptions opts;
  opts.weight_dtype = DType::BF16;
  LlamaModelFile file = load_model(fixture_path("llama-bf16"), opts);
  EXPECT_EQ(file.weights.layers.at(0).q_proj.dtype(), DType::BF16);
  LlamaModel model(std::move(file));
  expect_matches_goldens(model, "llama-bf16", "llama-bf16 (bf16 weights)", kFp32Tol);
}

// ---------------------------------------------------------------------------------------------
// stories260K from its original files: the llama2.c checkpoint and the GGUF store q/k rows in the
// adjacent-pair RoPE order; the loader must permute them into the HF order the HF folder holds.

class GoldenStoriesFormats : public ::testing::TestWithParam<const char*> {};

TEST_P(GoldenStoriesFormats, MatchesHfFolderGoldens) {
  const std::string path = test::shared_path(std::string("models/stories260K/") + GetParam());
  if (!test::exists(path)) GTEST_SKIP() << path << " not found (../shared beside the repository or $QLORA_SHARED_DIR)";
  LlamaModelFile file = load_model(path);
  EXPECT_EQ(file.config.vocab_size, 512);
  EXPECT_EQ(file.config.num_key_value_heads, 4);
  LlamaModel model(std::move(file));
  expect_matches_goldens(model, "stories260k-hf", std::string("stories260K ") + GetParam(), kFp32Tol);
}

INSTANTIATE_TEST_SUITE_P(Stories, GoldenStoriesFormats,
                         ::testing::Values("stories260K.bin", "tinyllamas-stories-260k-f32.gguf"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return std::string(info.index == 0 ? "llama2c_bin" : "gguf_v1");
                         });

// ---------------------------------------------------------------------------------------------
// SmolLM2-135M-Instruct, Q4_1 GGUF (scripts/fetch_models.sh). The golden keeps, per prompt, the full
// last row, every 16th vocab column of every row, and transformers' argmax and top-2 gap per row.

TEST(GoldenSmolLM2, Q4_1GgufMatchesTransformers) {
  const std::string path = test::source_path("models/SmolLM2-135M-Instruct.Q4_1.gguf");
  if (!test::exists(path)) GTEST_SKIP() << path << " not found; run scripts/fetch_models.sh";
  constexpr int64_t kStride = 16;  // make_goldens.py SMOLLM2_STRIDE
  LlamaModel model(load_model(path));
  SafetensorsFile g = SafetensorsFile::open(fixture_path("smollm2-135m/golden_logits.safetensors"));
  float worst = 0;
  for (int k = 0; g.contains("input_ids_" + std::to_string(k)); ++k) {
    const std::string ks = std::to_string(k);
    const std::vector<int32_t> ids = ids_from(g.get("input_ids_" + ks));
    const Tensor last = g.get("logits_last_" + ks);       // (V)
    const Tensor cols = g.get("logits_cols16_" + ks);     // (T, ceil(V/16))
    const Tensor argmax = g.get("argmax_" + ks);          // (T) i64
    const Tensor gap = g.get("top2_gap_" + ks);           // (T) f32
    Tensor got = model.forward_sequence(ids);             // (T, V)
    const int64_t T = int64_t(ids.size()), V = got.dim(1);
    ASSERT_EQ(got.dim(0), T);
    ASSERT_EQ(last.numel(), V);
    ASSERT_EQ(cols.dim(1), (V + kStride - 1) / kStride);

    float err = 0;
    for (int64_t j = 0; j < V; ++j)
      err = std::max(err, std::fabs(got.data<float>()[(T - 1) * V + j] - last.data<float>()[j]));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < cols.dim(1); ++c)
        err = std::max(err, std::fabs(got.data<float>()[t * V + c * kStride] - cols.data<float>()[t * cols.dim(1) + c]));
    worst = std::max(worst, err);
    std::vector<int64_t> mismatches;
    int64_t checked = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (gap.data<float>()[t] <= 2 * kSmolLM2Tol) continue;  // a near-tie may flip within tolerance
      ++checked;
      if (argmax_row(got.data<float>() + t * V, V) != argmax.data<int64_t>()[t]) mismatches.push_back(t);
    }
    std::printf("[golden] smollm2-135m Q4_1           prompt %d  T=%-3lld max_abs_err %.3g (tol %.0e), argmax "
                "checked at %lld/%lld positions\n",
                k, (long long)T, double(err), double(kSmolLM2Tol), (long long)checked, (long long)T);
    EXPECT_LE(err, kSmolLM2Tol) << "prompt " << k;
    EXPECT_TRUE(mismatches.empty()) << "prompt " << k << ": argmax differs at positions " << rows_str(mismatches);
  }
  RecordProperty("max_abs_err", std::to_string(worst));
}

// ---------------------------------------------------------------------------------------------
// bf16 compute on the real stories260K: close to the fp32 goldens, looser tolerance (kBf16RelTol).

TEST(GoldenBf16Compute, Stories260kCloseToFp32Goldens) {
  ForwardOptions bf16;
  bf16.compute = DType::BF16;
  LlamaModel model(load_model(fixture_path("stories260k-hf")), bf16);
  for (const GoldenPrompt& p : read_goldens("stories260k-hf")) {
    const float tol = kBf16RelTol * max_abs(p.logits);
    Comparison c = compare_logits(model.forward_sequence(p.ids), p.logits, tol);
    std::printf("[golden] stories260k-hf bf16 compute  T=%-3zu max_abs_err %.3g (tol %.3g = %.0f%% of max |logit|)\n",
                p.ids.size(), double(c.max_abs_err), double(tol), double(kBf16RelTol * 100));
    EXPECT_LE(c.max_abs_err, tol);
    EXPECT_GT(c.max_abs_err, 0.0f) << "bf16 compute gave the fp32 logits bit for bit: is it rounding at all?";
    EXPECT_TRUE(c.argmax_mismatch_rows.empty()) << "argmax differs at " << rows_str(c.argmax_mismatch_rows);
  }
}

// ---------------------------------------------------------------------------------------------
// KV cache: decoding token by token (and a prefill in two chunks) equals one forward_sequence.

class GoldenKvCache : public ::testing::TestWithParam<const char*> {};

TEST_P(GoldenKvCache, TokenByTokenEqualsForwardSequence) {
  const std::string fixture = GetParam();
  LlamaModel model(load_model(fixture_path(fixture)));
  const std::vector<GoldenPrompt> prompts = read_goldens(fixture);
  const GoldenPrompt& p = prompts.back();  // the longest prompt
  const int64_t T = int64_t(p.ids.size());
  const Tensor full = model.forward_sequence(p.ids);  // (T, V)
  const int64_t V = full.dim(1);

  KvCache cache(model.config(), T);
  Tensor stepped = Tensor::zeros({T, V});
  for (int64_t t = 0; t < T; ++t) {
    Tensor row = model.forward(cache, p.ids.data() + t, 1, /*all_logits=*/true);  // (1, V)
    ASSERT_EQ(row.shape(), (Shape{1, V}));
    std::copy_n(row.data<float>(), V, stepped.data<float>() + t * V);
    EXPECT_EQ(cache.size(), t + 1);
  }
  Comparison c = compare_logits(stepped, full, 0);
  std::printf("[golden] %-28s kv-cache token by token vs sequence: max_abs_err %.3g\n", fixture.c_str(),
              double(c.max_abs_err));
  EXPECT_LE(c.max_abs_err, kKvCacheTol);
  EXPECT_TRUE(c.argmax_mismatch_rows.empty()) << rows_str(c.argmax_mismatch_rows);
  // Also against transformers directly.
  EXPECT_LE(compare_logits(stepped, p.logits, kFp32Tol).max_abs_err, kFp32Tol);

  // Prefill of the first part, then the rest in one call returning only the last row.
  cache.clear();
  const int64_t split = T / 2;
  Tensor first = model.forward(cache, p.ids.data(), split, /*all_logits=*/true);  // (split, V)
  ASSERT_EQ(first.shape(), (Shape{split, V}));
  Tensor last = model.forward(cache, p.ids.data() + split, T - split, /*all_logits=*/false);  // (1, V)
  ASSERT_EQ(last.shape(), (Shape{1, V}));
  float err = 0;
  for (int64_t j = 0; j < split * V; ++j) err = std::max(err, std::fabs(first.data<float>()[j] - full.data<float>()[j]));
  for (int64_t j = 0; j < V; ++j)
    err = std::max(err, std::fabs(last.data<float>()[j] - full.data<float>()[(T - 1) * V + j]));
  EXPECT_LE(err, kKvCacheTol) << "two-chunk prefill, split at " << split;
}

// Sliding window (mistral-swa: window 6 < T = 24), biases (qwen2) and head norms before RoPE
// (qwen3: the cache holds normalised, rotated keys) must also hold across the cache.
INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenKvCache,
                         ::testing::Values("stories260k-hf", "qwen2", "mistral-swa", "qwen3", "mixtral", "qwen3-moe"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string s = info.param;
                           std::replace(s.begin(), s.end(), '-', '_');
                           return s;
                         });

}  // namespace
}  // namespace qlora
