// llama2.c checkpoint reader and its path through load_model: the real stories260K.bin
// (header, exact size, 260,032 parameters), its weights equal to the same model's GGUF after
// both go through load_model (same q/k permutation), the permutation itself, and bad files.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "io/llama2c.h"
#include "io_test_util.h"
#include "model/loader.h"
#include "test_paths.h"

namespace qlora {
namespace {

using test::expect_error;

std::string bin_path() { return test::shared_path("models/stories260K/stories260K.bin"); }
std::string gguf_path() { return test::shared_path("models/stories260K/tinyllamas-stories-260k-f32.gguf"); }

#define REQUIRE_FILE(p) \
  if (!test::exists(p)) GTEST_SKIP() << (p) << " not found"

void expect_equal(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_TRUE(a.defined() && b.defined()) << what;
  ASSERT_EQ(a.shape(), b.shape()) << what;
  ASSERT_EQ(a.dtype(), b.dtype()) << what;
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << what;
}

TEST(Llama2c, OpensStories260K) {
  REQUIRE_FILE(bin_path());
  const Llama2cCheckpoint ck = Llama2cCheckpoint::open(bin_path());
  const Llama2cHeader& h = ck.header;
  EXPECT_EQ(h.dim, 64);
  EXPECT_EQ(h.hidden_dim, 172);
  EXPECT_EQ(h.n_layers, 5);
  EXPECT_EQ(h.n_heads, 8);
  EXPECT_EQ(h.n_kv_heads, 4);
  EXPECT_EQ(h.vocab_size, 512);
  EXPECT_EQ(h.seq_len, 512);
  EXPECT_TRUE(h.shared_classifier);
  EXPECT_EQ(h.float_count(), 264128);  // README: (1,056,540 - 28) / 4
  EXPECT_EQ(ck.wk.shape(), (Shape{5, 32, 64}));
  EXPECT_EQ(ck.w2.shape(), (Shape{5, 64, 172}));
  EXPECT_EQ(ck.freq_cos.shape(), (Shape{512, 4}));
  EXPECT_EQ(ck.wcls.raw(), ck.token_embedding.raw());
  // freq_cos at position 0 is cos(0) = 1 for every frequency.
  for (int i = 0; i < 4; ++i) EXPECT_EQ(ck.freq_cos.data<float>()[i], 1.0f);
}

TEST(Llama2c, LoadModelGivesConfigAndTiedHead) {
  REQUIRE_FILE(bin_path());
  const LlamaModelFile m = load_model(bin_path());
  const LlamaConfig& c = m.config;
  EXPECT_EQ(m.format, "llama2c");
  EXPECT_EQ(m.file_dtype, "f32");
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 172);
  EXPECT_EQ(c.num_hidden_layers, 5);
  EXPECT_EQ(c.num_attention_heads, 8);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.max_position_embeddings, 512);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.parameter_count(), 260032);
  EXPECT_EQ(m.weights.lm_head.raw(), m.weights.embed_tokens.raw());
  EXPECT_EQ(m.weights.layers.size(), 5u);
}

TEST(Llama2c, QkRowsArePermutedToRotateHalfOrder) {
  REQUIRE_FILE(bin_path());
  const Llama2cCheckpoint ck = Llama2cCheckpoint::open(bin_path());
  const LlamaModelFile m = load_model(bin_path());
  const int64_t D = 8, C = 64;
  for (int64_t l : {0, 4}) {
    const float* raw_q = ck.wq.slice_rows(l, l + 1).data<float>();
    const float* raw_k = ck.wk.slice_rows(l, l + 1).data<float>();
    const float* raw_v = ck.wv.slice_rows(l, l + 1).data<float>();
    const auto& L = m.weights.layers[size_t(l)];
    for (int64_t h = 0; h < 8; ++h)
      for (int64_t i = 0; i < D / 2; ++i)
        for (int64_t j = 0; j < 2; ++j) {
          const int64_t hf_row = h * D + j * (D / 2) + i, file_row = h * D + 2 * i + j;
          EXPECT_EQ(std::memcmp(L.q_proj.data<float>() + hf_row * C, raw_q + file_row * C, C * 4), 0);
          if (h < 4) {
            EXPECT_EQ(std::memcmp(L.k_proj.data<float>() + hf_row * C, raw_k + file_row * C, C * 4), 0);
          }
        }
    // v is not permuted.
    EXPECT_EQ(std::memcmp(L.v_proj.raw(), raw_v, 32 * 64 * 4), 0);
  }
}

TEST(Llama2c, WeightsEqualTheGgufAfterLoading) {
  REQUIRE_FILE(bin_path());
  REQUIRE_FILE(gguf_path());
  const LlamaModelFile a = load_model(bin_path());
  const LlamaModelFile b = load_model(gguf_path());
  EXPECT_EQ(b.format, "gguf");
  EXPECT_EQ(b.file_dtype, "F32");
  EXPECT_EQ(a.config.hidden_size, b.config.hidden_size);
  EXPECT_EQ(a.config.num_key_value_heads, b.config.num_key_value_heads);
  EXPECT_EQ(a.config.max_position_embeddings, b.config.max_position_embeddings);
  EXPECT_EQ(a.config.rms_norm_eps, b.config.rms_norm_eps);
  EXPECT_EQ(a.config.vocab_size, b.config.vocab_size);
  EXPECT_EQ(a.config.bos_token_id, b.config.bos_token_id);
  EXPECT_EQ(a.config.eos_token_ids, b.config.eos_token_ids);
  // The GGUF stores output.weight separately (a copy of the embedding): untied there.
  EXPECT_FALSE(b.config.tie_word_embeddings);
  const auto& wa = a.weights;
  const auto& wb = b.weights;
  expect_equal(wa.embed_tokens, wb.embed_tokens, "embed_tokens");
  expect_equal(wa.norm, wb.norm, "norm");
  expect_equal(wa.lm_head, wb.lm_head, "lm_head");
  for (size_t l = 0; l < 5; ++l) {
    const auto& x = wa.layers[l];
    const auto& y = wb.layers[l];
    const std::string p = "layer " + std::to_string(l) + " ";
    expect_equal(x.input_layernorm, y.input_layernorm, p + "input_layernorm");
    expect_equal(x.q_proj, y.q_proj, p + "q_proj");
    expect_equal(x.k_proj, y.k_proj, p + "k_proj");
    expect_equal(x.v_proj, y.v_proj, p + "v_proj");
    expect_equal(x.o_proj, y.o_proj, p + "o_proj");
    expect_equal(x.post_attention_layernorm, y.post_attention_layernorm, p + "post_attention_layernorm");
    expect_equal(x.gate_proj, y.gate_proj, p + "gate_proj");
    expect_equal(x.up_proj, y.up_proj, p + "up_proj");
    expect_equal(x.down_proj, y.down_proj, p + "down_proj");
  }
}

TEST(Llama2c, Bf16WeightsKeepNormsF32) {
  REQUIRE_FILE(bin_path());
  const LlamaModelFile m = load_model(bin_path(), {DType::BF16});
  EXPECT_EQ(m.weights.embed_tokens.dtype(), DType::BF16);
  EXPECT_EQ(m.weights.layers[0].q_proj.dtype(), DType::BF16);
  EXPECT_EQ(m.weights.layers[0].input_layernorm.dtype(), DType::F32);
  EXPECT_EQ(m.weights.norm.dtype(), DType::F32);
  EXPECT_EQ(m.config.torch_dtype, "bfloat16");
  const LlamaModelFile f = load_model(bin_path());
  for (int64_t i = 0; i < 100; ++i)
    EXPECT_EQ(bf16_to_f32(m.weights.layers[2].k_proj.data<uint16_t>()[i]),
              bf16_to_f32(f32_to_bf16(f.weights.layers[2].k_proj.data<float>()[i])));
}

TEST(Llama2c, TruncatedOrPaddedCopiesAreErrors) {
  REQUIRE_FILE(bin_path());
  test::TempDir dir;
  auto bytes = test::read_bytes(bin_path());
  const std::string path = dir.file("cut.bin");
  test::write_bytes(path, std::vector<uint8_t>(bytes.begin(), bytes.end() - 4));
  expect_error([&] { load_model(path); },
               {"[llama2c]", path, "expected 1056540 bytes, got 1056536", "truncated"});
  auto padded = bytes;
  padded.push_back(0);
  test::write_bytes(path, padded);
  expect_error([&] { Llama2cCheckpoint::open(path); }, {path, "expected 1056540 bytes, got 1056541"});
  test::write_bytes(path, std::vector<uint8_t>(bytes.begin(), bytes.begin() + 20));
  expect_error([&] { Llama2cCheckpoint::open(path); }, {path, "truncated", "header"});
  auto bad = bytes;
  const int32_t zero_heads = 0;
  std::memcpy(bad.data() + 12, &zero_heads, 4);
  test::write_bytes(path, bad);
  expect_error([&] { Llama2cCheckpoint::open(path); }, {path, "n_heads"});
}

TEST(Llama2c, SeparateClassifierWhenVocabIsNegative) {
  // A tiny synthetic checkpoint: C=8, F=16, L=1, H=2, Hkv=1, V=-10 (untied), seq_len=4.
  Llama2cHeader h;
  h.dim = 8, h.hidden_dim = 16, h.n_layers = 1, h.n_heads = 2, h.n_kv_heads = 1, h.vocab_size = 10;
  h.seq_len = 4, h.shared_classifier = false;
  test::Bytes out;
  for (int32_t v : {8, 16, 1, 2, 1, -10, 4}) out.put(v);
  for (int64_t i = 0; i < h.float_count(); ++i) out.put(float(i));
  test::TempDir dir;
  const std::string path = dir.file("tiny.bin");
  test::write_bytes(path, out.b);
  const Llama2cCheckpoint ck = Llama2cCheckpoint::open(path);
  EXPECT_FALSE(ck.header.shared_classifier);
  EXPECT_EQ(ck.wcls.shape(), (Shape{10, 8}));
  EXPECT_EQ(ck.wcls.data<float>()[0], float(h.float_count() - 80));
  const LlamaModelFile m = load_model(path);
  EXPECT_FALSE(m.config.tie_word_embeddings);
  EXPECT_EQ(m.weights.lm_head.data<float>()[79], float(h.float_count() - 1));
  EXPECT_EQ(m.config.parameter_count(), h.float_count() - 2 * 4 * 2);  // minus the RoPE tables
}

}  // namespace
}  // namespace qlora
