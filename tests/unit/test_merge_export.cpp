// Merging and exporting: merged weights give the logits of the unmerged TrainModel; an HF folder
// we write loads back with identical weights (f32) or bf16-rounded ones; a GGUF we write loads
// back exactly at f32, within Q8_0's rounding at q8_0 (with close logits); nf4 re-quantization
// loads back within NF4's error; bad adapters are refused naming the key; the SmolLM2 GGUF's
// tokenizer becomes a tokenizer.json that encodes like the GGUF one; the streaming merge and
// exports (merged_source, tensor by tensor) write the same tensors, byte for byte, as merging the
// whole model in memory first.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/tokenizer.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "io/safetensors.h"
#include "io_test_util.h"
#include "model/hf_export.h"
#include "model/llama.h"
#include "model/merge.h"
#include "model/load_common.h"
#include "train/adapter_export.h"
#include "train_test_util.h"

namespace qlora {
namespace {

using test::expect_error;
using test::TempDir;

// Merged-then-forward vs unmerged: the same sums in another order (W·x + s·B·(A·x) against
// (W + s·B·A)·x), f32 accumulation over C ≤ 128: observed ≤ 2e-6 on logits of magnitude ~1.
constexpr double kMergeLogitTol = 2e-5;
// Q8_0 logits, relative to max |logit|: weights move by up to amax/254 per block (~0.4% RMS of a
// uniform weight, 10x f16's); observed 2.7% on llama-gqa with its random weights (f16: 0.11%).
constexpr double kQ8LogitTol = 5e-2;

// LoRA on every projection; on an MoE fixture also on the routers ("gate") and every expert's
// parts (mixtral w1/w2/w3; qwen3-moe's gate/up/down_proj name its experts and dense MLP alike).
TrainModelOptions lora_all(const std::string& fixture = "") {
  TrainModelOptions o;
  o.method = TrainMethod::Lora;
  o.lora.r = 4;
  o.lora.lora_alpha = 16;
  o.lora.seed = 7;
  if (fixture == "mixtral") o.lora.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate", "w1", "w2", "w3"};
  if (fixture == "qwen3-moe") o.lora.target_modules.push_back("gate");
  return o;
}

std::vector<int32_t> some_ids(int64_t vocab, int n, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back(int32_t(rng.next_u64() % uint64_t(vocab)));
  return ids;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  if (a.shape() != b.shape()) return INFINITY;
  const Tensor x = a.to(DType::F32), y = b.to(DType::F32);
  double worst = 0;
  for (int64_t i = 0; i < x.numel(); ++i)
    worst = std::max(worst, std::abs(double(x.data<float>()[i]) - double(y.data<float>()[i])));
  return worst;
}

// Every weight tensor of a model, by HF name.
std::vector<std::pair<std::string, Tensor>> all_weights(const LlamaModelFile& m) {
  std::vector<std::pair<std::string, Tensor>> out = {{"embed", m.weights.embed_tokens}, {"norm", m.weights.norm},
                                                     {"lm_head", m.weights.lm_head}};
  for (size_t l = 0; l < m.weights.layers.size(); ++l) {
    const LlamaLayerWeights& w = m.weights.layers[l];
    const std::string p = "layer" + std::to_string(l) + ".";
    for (const auto& [n, t] :
         std::vector<std::pair<std::string, Tensor>>{{"in_norm", w.input_layernorm}, {"q", w.q_proj}, {"k", w.k_proj},
                                                     {"v", w.v_proj}, {"o", w.o_proj}, {"post_norm", w.post_attention_layernorm},
                                                     {"gate", w.gate_proj}, {"up", w.up_proj}, {"down", w.down_proj},
                                                     {"q_bias", w.q_bias}, {"k_bias", w.k_bias}, {"v_bias", w.v_bias},
                                                     {"q_norm", w.q_norm}, {"k_norm", w.k_norm}})
      if (t.defined()) out.emplace_back(p + n, t);
    if (w.router.defined()) out.emplace_back(p + "router", w.router);
    for (size_t e = 0; e < w.experts.size(); ++e)
      for (int part = 0; part < 3; ++part)
        if (w.experts[e][size_t(part)].defined())  // a dense layer of a mixed model has none
          out.emplace_back(p + "expert" + std::to_string(e) + "." + std::to_string(part), w.experts[e][size_t(part)]);
  }
  return out;
}

// A fixture merged with a randomized adapter, and the TrainModel that holds the adapter unmerged.
struct Merged {
  LlamaModelFile file;
  PeftAdapter adapter;
};
Merged merged_fixture(const std::string& fixture, TrainModel* model_out = nullptr) {
  TrainModel model(test::load_fixture(fixture), lora_all(fixture));
  test::randomize_lora_b(model, 21, 0.2);
  Merged m{test::load_fixture(fixture), peft_adapter_from_model(model)};
  merge_adapter(m.file.weights, m.file.config, m.adapter);
  if (model_out) load_adapter_into_model(*model_out, m.adapter);
  return m;
}

TEST(Merge, MergedForwardEqualsUnmergedAdapter) {
  for (const char* fixture : {"llama-gqa", "qwen2", "llama-tied", "qwen3", "mixtral", "qwen3-moe"}) {
    SCOPED_TRACE(fixture);
    TrainModel model(test::load_fixture(fixture), lora_all(fixture));
    Merged m = merged_fixture(fixture, &model);
    const std::vector<int32_t> ids = some_ids(m.file.config.vocab_size, 12, 5);
    std::vector<TrainSequence> seqs(1);
    for (size_t t = 0; t < ids.size(); ++t) {
      seqs[0].ids.push_back(ids[t]);
      seqs[0].labels.push_back(-100);
      seqs[0].position_ids.push_back(int64_t(t));
      seqs[0].segment_ids.push_back(0);
    }
    seqs[0].n_examples = 1;
    const Tensor unmerged = model.logits(make_batch(seqs, 0, 1));
    const Tensor base = LlamaModel(test::load_fixture(fixture)).forward_sequence(ids);
    const Tensor merged = LlamaModel(std::move(m.file)).forward_sequence(ids);
    const double err = max_abs_diff(merged, unmerged);
    EXPECT_LT(err, kMergeLogitTol);
    // The adapter must matter, or the comparison proves nothing.
    EXPECT_GT(max_abs_diff(base, unmerged), 100 * kMergeLogitTol);
    std::printf("%s: merged vs unmerged logits max |diff| %.3g\n", fixture, err);
  }
}

TEST(Merge, RefusesAdaptersThatDoNotFit) {
  Merged m = merged_fixture("llama-gqa");
  PeftAdapter bad = m.adapter;
  bad.tensors[0].first = "base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight";
  LlamaModelFile base = test::load_fixture("llama-gqa");
  expect_error([&] { merge_adapter(base.weights, base.config, bad); }, {"layers.9", "layer 9"});
  bad = m.adapter;
  bad.tensors[0].first = "base_model.model.model.layers.0.self_attn.x_proj.lora_A.weight";
  expect_error([&] { merge_adapter(base.weights, base.config, bad); }, {"x_proj"});
  bad = m.adapter;
  for (auto& [k, t] : bad.tensors)
    if (k.find("layers.0.self_attn.q_proj.lora_A") != std::string::npos) t = Tensor::zeros({4, 3});
  expect_error([&] { merge_adapter(base.weights, base.config, bad); }, {"model.layers.0.self_attn.q_proj", "(4, 3)"});
}

// Every tensor of two safetensors files (or two GGUF files) byte for byte.
void expect_same_tensors(const SafetensorsFile& a, const SafetensorsFile& b) {
  ASSERT_EQ(a.names().size(), b.names().size());
  for (const std::string& name : a.names()) {
    ASSERT_TRUE(b.contains(name)) << name;
    const Tensor x = a.get(name), y = b.get(name);
    ASSERT_EQ(x.nbytes(), y.nbytes()) << name;
    EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0) << name;
  }
}

TEST(Export, StreamingMergeWritesWhatTheInMemoryMergeWrites) {
  for (const char* fixture : {"llama-gqa", "llama-bf16", "llama-tied"}) {
    SCOPED_TRACE(fixture);
    const Merged m = merged_fixture(fixture);  // merged in memory, all tensors f32
    const ModelSource streamed = merged_source(ModelSource::open(test::source_path(std::string("tests/golden/fixtures/") + fixture)), m.adapter);
    TempDir dir;
    HfExportOptions f32, bf16, nf4;
    bf16.dtype = DType::BF16;
    nf4.quantize_nf4 = true;
    for (const auto& [name, o] : {std::pair{"f32", f32}, {"bf16", bf16}, {"nf4", nf4}}) {
      SCOPED_TRACE(name);
      export_hf_folder(m.file, dir.file(std::string("eager-") + name), o);
      export_hf_folder(streamed, dir.file(std::string("stream-") + name), o);
      expect_same_tensors(SafetensorsFile::open(dir.file(std::string("eager-") + name) + "/model.safetensors"),
                          SafetensorsFile::open(dir.file(std::string("stream-") + name) + "/model.safetensors"));
    }
    for (GgmlType type : {GgmlType::F16, GgmlType::Q8_0}) {
      GgufExportOptions o;
      o.type = type;
      export_gguf(m.file, dir.file("eager.gguf"), o);
      export_gguf(streamed, dir.file("stream.gguf"), o);
      const GgufFile a = GgufFile::open(dir.file("eager.gguf")), b = GgufFile::open(dir.file("stream.gguf"));
      ASSERT_EQ(a.tensors().size(), b.tensors().size());
      for (const GgufTensorInfo& t : a.tensors()) {
        const Tensor x = a.load(t.name, true), y = b.load(t.name, true);
        ASSERT_EQ(x.nbytes(), y.nbytes()) << t.name;
        EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0) << t.name;
      }
    }
  }
}

TEST(Export, HfFolderLoadsBackIdentically) {
  for (const char* fixture : {"llama-gqa", "qwen2", "llama-tied", "qwen3", "mixtral", "qwen3-moe"}) {
    SCOPED_TRACE(fixture);
    Merged m = merged_fixture(fixture);
    TempDir dir;
    export_hf_folder(m.file, dir.file("f32"));
    const LlamaModelFile back = load_model(dir.file("f32"));
    EXPECT_EQ(back.config.to_hf_json().dump(), m.file.config.to_hf_json().dump());
    const auto want = all_weights(m.file), got = all_weights(back);
    ASSERT_EQ(want.size(), got.size());
    for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(max_abs_diff(want[i].second, got[i].second), 0.0) << want[i].first;
    EXPECT_EQ(back.config.tie_word_embeddings, std::string(fixture) == "llama-tied");
    EXPECT_TRUE(std::filesystem::exists(dir.file("f32/generation_config.json")));

    // bf16: every weight is the bf16 rounding of the f32 one.
    HfExportOptions bf;
    bf.dtype = DType::BF16;
    export_hf_folder(m.file, dir.file("bf16"), bf);
    const LlamaModelFile back16 = load_model(dir.file("bf16"));
    EXPECT_EQ(back16.file_dtype, "bf16");
    const auto got16 = all_weights(back16);
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_EQ(max_abs_diff(want[i].second.to(DType::BF16), got16[i].second), 0.0) << want[i].first;
  }
}

TEST(Export, Nf4FolderLoadsBackWithinQuantizationError) {
  Merged m = merged_fixture("llama-gqa");
  TempDir dir;
  HfExportOptions o;
  o.quantize_nf4 = true;
  export_hf_folder(m.file, dir.file("nf4"), o);
  const LlamaModelFile back = load_model(dir.file("nf4"));
  EXPECT_NE(back.file_dtype.find("nf4"), std::string::npos) << back.file_dtype;
  std::ifstream in(dir.file("nf4/config.json"));
  const nlohmann::json cfg = nlohmann::json::parse(in);
  EXPECT_EQ(cfg["quantization_config"]["bnb_4bit_quant_type"], "nf4");
  // NF4's largest code gap is ~0.28 of the block absmax, so |error| ≤ 0.14·absmax (+ double quant).
  const LlamaLayerWeights& w = m.file.weights.layers[0];
  const LlamaLayerWeights& b = back.weights.layers[0];
  double amax = 0;
  for (int64_t i = 0; i < w.q_proj.numel(); ++i) amax = std::max(amax, double(std::abs(w.q_proj.data<float>()[i])));
  EXPECT_LT(max_abs_diff(w.q_proj, b.q_proj), 0.15 * amax);
  EXPECT_GT(max_abs_diff(w.q_proj, b.q_proj), 0.0);
  EXPECT_EQ(max_abs_diff(m.file.weights.embed_tokens, back.weights.embed_tokens), 0.0);
}

TEST(Export, GgufF32LoadsBackExactly) {
  for (const char* fixture : {"llama-gqa", "qwen2", "llama-tied", "qwen3"}) {
    SCOPED_TRACE(fixture);
    Merged m = merged_fixture(fixture);
    TempDir dir;
    GgufExportOptions o;
    o.type = GgmlType::F32;
    export_gguf(m.file, dir.file("m.gguf"), o);
    const LlamaModelFile back = load_model(dir.file("m.gguf"));
    const auto want = all_weights(m.file), got = all_weights(back);
    ASSERT_EQ(want.size(), got.size());
    for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(max_abs_diff(want[i].second, got[i].second), 0.0) << want[i].first;
    EXPECT_EQ(back.config.num_key_value_heads, m.file.config.num_key_value_heads);
    EXPECT_EQ(back.config.rope_theta, m.file.config.rope_theta);
    EXPECT_EQ(back.config.tie_word_embeddings, m.file.config.tie_word_embeddings);
    const GgufFile g = GgufFile::open(dir.file("m.gguf"));
    EXPECT_EQ(g.find_tensor("output.weight") == nullptr, m.file.config.tie_word_embeddings);
    EXPECT_EQ(g.find_tensor("blk.0.attn_norm.weight")->type, uint32_t(GgmlType::F32));
    // llama.cpp's names for Qwen3: architecture qwen3, head norms attn_q_norm / attn_k_norm.
    const bool qwen3 = std::string(fixture) == "qwen3";
    EXPECT_EQ(g.get("general.architecture").as_string("arch"), qwen3 ? "qwen3" : std::string(fixture) == "qwen2" ? "qwen2" : "llama");
    EXPECT_EQ(g.find_tensor("blk.1.attn_q_norm.weight") != nullptr, qwen3);
    EXPECT_EQ(g.find_tensor("blk.1.attn_k_norm.weight") != nullptr, qwen3);
    EXPECT_EQ(back.config.architecture, m.file.config.architecture);
  }
}

// Q8_0 per block of 32: |x - q·d16| ≤ d/2 + 127·|d - d16| ≤ d·(0.5 + 127·2^-11) with d = amax/127.
// (F16, where rows are not a multiple of 32, is far inside that bound.)
void expect_within_q8_0_rounding(const Tensor& a, const Tensor& b, const std::string& name) {
  for (int64_t blk = 0; blk < a.numel() / 32; ++blk) {
    double amax = 0, err = 0;
    for (int64_t j = 0; j < 32; ++j) {
      amax = std::max(amax, double(std::abs(a.data<float>()[blk * 32 + j])));
      err = std::max(err, std::abs(double(a.data<float>()[blk * 32 + j]) - double(b.data<float>()[blk * 32 + j])));
    }
    ASSERT_LE(err, amax / 127.0 * (0.5 + 127.0 / 2048.0) + 1e-12) << name << " block " << blk;
  }
}

// The variant of the qwen3-moe fixture that llama.cpp's qwen3moe can run: every layer sparse (its
// dense layer 1 takes layer 0's router and experts) and the top k renormalised.
LlamaModelFile all_sparse_qwen3_moe(LlamaModelFile f) {
  f.config.mlp_only_layers.clear();
  f.config.norm_topk_prob = true;
  LlamaLayerWeights& dense = f.weights.layers[1];
  dense.gate_proj = dense.up_proj = dense.down_proj = Tensor();
  dense.router = f.weights.layers[0].router;
  dense.experts = f.weights.layers[0].experts;
  return f;
}

// Mixtral ("llama" with experts) and Qwen3-MoE ("qwen3moe") as llama.cpp stores them: the router
// ffn_gate_inp, the experts stacked in ffn_{gate,up,down}_exps; loaded back expert by expert.
TEST(Export, GgufMoeLoadsBackExactly) {
  for (const std::string fixture : {"mixtral", "qwen3-moe"}) {
    SCOPED_TRACE(fixture);
    Merged m = merged_fixture(fixture);
    TempDir dir;
    GgufExportOptions o;
    o.type = GgmlType::F32;
    if (fixture == "qwen3-moe") {
      // What llama.cpp would run otherwise is refused, before any file is written.
      expect_error([&] { export_gguf(m.file, dir.file("m.gguf"), o); }, {"dense MLP layers", "HF folder"});
      LlamaModelFile topk = all_sparse_qwen3_moe(m.file);
      topk.config.norm_topk_prob = false;
      expect_error([&] { export_gguf(topk, dir.file("m.gguf"), o); }, {"norm_topk_prob"});
      EXPECT_FALSE(std::filesystem::exists(dir.file("m.gguf")));
      m.file = all_sparse_qwen3_moe(std::move(m.file));
    }
    export_gguf(m.file, dir.file("m.gguf"), o);
    const GgufFile g = GgufFile::open(dir.file("m.gguf"));
    const LlamaConfig& c = m.file.config;
    const std::string arch = fixture == "mixtral" ? "llama" : "qwen3moe";
    EXPECT_EQ(g.get("general.architecture").as_string("arch"), arch);
    EXPECT_EQ(g.get(arch + ".expert_count").as_int("n"), c.num_local_experts);
    EXPECT_EQ(g.get(arch + ".expert_used_count").as_int("k"), c.num_experts_per_tok);
    EXPECT_EQ(g.find_tensor("blk.0.ffn_gate_exps.weight")->shape,
              (Shape{c.num_local_experts, c.moe_intermediate_size, c.hidden_size}));
    EXPECT_EQ(g.find_tensor("blk.1.ffn_down_exps.weight")->shape,
              (Shape{c.num_local_experts, c.hidden_size, c.moe_intermediate_size}));
    EXPECT_EQ(g.find_tensor("blk.0.ffn_gate_inp.weight")->shape, (Shape{c.num_local_experts, c.hidden_size}));
    EXPECT_EQ(g.find_tensor("blk.0.ffn_gate.weight"), nullptr);

    const LlamaModelFile back = load_model(dir.file("m.gguf"));
    EXPECT_EQ(back.config.architecture, c.architecture);
    EXPECT_EQ(back.config.num_local_experts, c.num_local_experts);
    EXPECT_EQ(back.config.num_experts_per_tok, c.num_experts_per_tok);
    EXPECT_EQ(back.config.moe_intermediate_size, c.moe_intermediate_size);
    EXPECT_TRUE(back.config.norm_topk_prob);
    const auto want = all_weights(m.file), got = all_weights(back);
    ASSERT_EQ(want.size(), got.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(want[i].first, got[i].first);
      EXPECT_EQ(max_abs_diff(want[i].second, got[i].second), 0.0) << want[i].first;
    }
    const std::vector<int32_t> ids = some_ids(c.vocab_size, 10, 8);
    const Tensor ref = LlamaModel(m.file).forward_sequence(ids);
    EXPECT_EQ(max_abs_diff(LlamaModel(back).forward_sequence(ids), ref), 0.0);

    // Q8_0: the stacked experts quantized (F16 where rows are not a multiple of 32), the router
    // kept F32 as convert_hf_to_gguf.py keeps it; every expert back within Q8_0's rounding. Not
    // compared on logits: rounding the experts can flip a near-tie in the top-k routing (measured
    // 0.6 on qwen3-moe's logits, where the dense fixtures stay within 3%).
    o.type = GgmlType::Q8_0;
    export_gguf(m.file, dir.file("q8.gguf"), o);
    const GgufFile g8 = GgufFile::open(dir.file("q8.gguf"));
    EXPECT_EQ(g8.find_tensor("blk.0.ffn_gate_inp.weight")->type, uint32_t(GgmlType::F32));
    EXPECT_EQ(g8.find_tensor("blk.0.ffn_gate_exps.weight")->type, uint32_t(GgmlType::Q8_0));
    const auto got8 = all_weights(load_model(dir.file("q8.gguf")));
    ASSERT_EQ(want.size(), got8.size());
    for (size_t i = 0; i < want.size(); ++i) {
      const Tensor a = want[i].second.to(DType::F32), b = got8[i].second.to(DType::F32);
      if (want[i].first.ends_with("router") || a.ndim() == 1)
        EXPECT_EQ(max_abs_diff(a, b), 0.0) << want[i].first;
      else
        expect_within_q8_0_rounding(a, b, want[i].first);
    }
  }
}

TEST(Export, GgufBf16AndQ8) {
  Merged m = merged_fixture("llama-gqa");
  TempDir dir;
  GgufExportOptions o;
  o.type = GgmlType::BF16;
  export_gguf(m.file, dir.file("bf16.gguf"), o);
  const LlamaModelFile bf = load_model(dir.file("bf16.gguf"));
  const auto want = all_weights(m.file), got_bf = all_weights(bf);
  for (size_t i = 0; i < want.size(); ++i) {
    // Matrices bf16-rounded, 1-D tensors kept f32 exactly.
    const Tensor expect = want[i].second.ndim() == 2 ? want[i].second.to(DType::BF16) : want[i].second;
    EXPECT_EQ(max_abs_diff(expect, got_bf[i].second), 0.0) << want[i].first;
  }

  o.type = GgmlType::Q8_0;
  export_gguf(m.file, dir.file("q8.gguf"), o);
  const LlamaModelFile q8 = load_model(dir.file("q8.gguf"));
  const auto got_q8 = all_weights(q8);
  for (size_t i = 0; i < want.size(); ++i) {
    const Tensor a = want[i].second.to(DType::F32), b = got_q8[i].second.to(DType::F32);
    if (a.ndim() == 1) {
      EXPECT_EQ(max_abs_diff(a, b), 0.0) << want[i].first;
      continue;
    }
    expect_within_q8_0_rounding(a, b, want[i].first);
  }
  const std::vector<int32_t> ids = some_ids(m.file.config.vocab_size, 10, 8);
  GgufExportOptions f16;
  f16.type = GgmlType::F16;
  export_gguf(m.file, dir.file("f16.gguf"), f16);
  const Tensor ref = LlamaModel(std::move(m.file)).forward_sequence(ids);
  const double err16 = max_abs_diff(LlamaModel(load_model(dir.file("f16.gguf"))).forward_sequence(ids), ref);
  std::printf("f16 logits max |diff| %.3g\n", err16);
  const double err = max_abs_diff(LlamaModel(load_model(dir.file("q8.gguf"))).forward_sequence(ids), ref);
  double scale = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) scale = std::max(scale, double(std::abs(ref.data<float>()[i])));
  std::printf("q8_0 logits max |diff| %.3g, max |logit| %.3g\n", err, scale);
  EXPECT_LT(err, kQ8LogitTol * scale);
}

TEST(Export, Q8BlockMatchesLlamaCppReference) {
  // quantize_row_q8_0_ref by hand: amax 2.54 -> d = 0.02, x/d rounded half away from zero.
  std::vector<float> x(32, 0.0f);
  x[0] = 2.54f;
  x[1] = -1.27f;
  x[2] = 0.01f;   // 0.5 -> 1 (roundf rounds half away from zero)
  x[3] = -0.03f;  // -1.5 -> -2
  std::vector<uint8_t> out(34);
  quantize_q8_0(x.data(), 32, out.data());
  uint16_t d;
  std::memcpy(&d, out.data(), 2);
  EXPECT_EQ(d, f32_to_f16(2.54f / 127.0f));
  EXPECT_EQ(int8_t(out[2]), 127);
  EXPECT_EQ(int8_t(out[3]), -64);  // -63.5 -> -64
  EXPECT_EQ(int8_t(out[4]), 1);
  EXPECT_EQ(int8_t(out[5]), -2);
  EXPECT_EQ(int8_t(out[6]), 0);
}

TEST(Export, PermuteRopeRowsInvertsTheLoader) {
  Tensor w = Tensor::zeros({12, 2});
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = float(i);
  // 3 heads of D = 4: HF row h*4 + j*2 + i -> file row h*4 + 2*i + j.
  const Tensor p = permute_rope_rows(w, 3);
  EXPECT_EQ(p.data<float>()[1 * 2], w.data<float>()[2 * 2]);  // file row 1 (i 0, j 1) = HF row 2
  EXPECT_EQ(p.data<float>()[2 * 2], w.data<float>()[1 * 2]);  // file row 2 (i 1, j 0) = HF row 1
  EXPECT_EQ(max_abs_diff(unpermute_rope_rows(p, 3), w), 0.0);
}

TEST(Export, GgufTokenizerBecomesTokenizerJson) {
  const std::string gguf = test::source_path("models/SmolLM2-135M-Instruct.Q4_1.gguf");
  if (!std::filesystem::exists(gguf)) GTEST_SKIP() << "needs " << gguf;
  LlamaModelFile model = load_model(gguf);
  TempDir dir;
  HfExportOptions o;
  o.dtype = DType::BF16;
  const std::vector<std::string> notes = export_hf_folder(model, dir.file("hf"), o);
  EXPECT_TRUE(notes.empty()) << notes[0];
  const auto from_gguf = load_tokenizer(gguf);
  const auto from_json = load_tokenizer(dir.file("hf/tokenizer.json"));
  for (const std::string text : {"Hello world! 12345 tokens", "<|im_start|>user\nWhat's 2+2?<|im_end|>\n",
                                 "  leading spaces, ünïcödé and emoji 🙂\n\ttab"}) {
    EXPECT_EQ(from_gguf->encode(text, false), from_json->encode(text, false)) << text;
  }
  std::ifstream in(dir.file("hf/tokenizer_config.json"));
  const nlohmann::json cfg = nlohmann::json::parse(in);
  EXPECT_TRUE(cfg.contains("chat_template"));
  EXPECT_EQ(cfg["eos_token"], "<|im_end|>");

  // And back: a GGUF exported from that HF folder carries the source GGUF's tokenizer metadata.
  GgufExportOptions go;
  go.type = GgmlType::BF16;
  export_gguf(load_model(dir.file("hf"), {DType::BF16}), dir.file("back.gguf"), go);
  const GgufFile src = GgufFile::open(gguf), back = GgufFile::open(dir.file("back.gguf"));
  for (const char* key : {"tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.chat_template"})
    EXPECT_EQ(back.get(key).as_string(key), src.get(key).as_string(key)) << key;
  for (const char* key : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id"})
    EXPECT_EQ(back.get(key).as_int(key), src.get(key).as_int(key)) << key;
  for (const char* key : {"tokenizer.ggml.tokens", "tokenizer.ggml.merges"}) {
    const GgufArray &a = src.get(key).as_array(key), &b = back.get(key).as_array(key);
    ASSERT_EQ(a.size(), b.size()) << key;
    for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i].as_string(key), b[i].as_string(key)) << key << " " << i;
  }
  const GgufArray &ta = src.get("tokenizer.ggml.token_type").as_array("t"),
                  &tb = back.get("tokenizer.ggml.token_type").as_array("t");
  ASSERT_EQ(ta.size(), tb.size());
  for (size_t i = 0; i < ta.size(); ++i) ASSERT_EQ(ta[i].as_int("t"), tb[i].as_int("t")) << i;
}

}  // namespace
}  // namespace qlora
