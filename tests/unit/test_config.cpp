// LlamaConfig from/to HF config.json: real-world field spellings (Llama 2/3.1, Mistral, Qwen2,
// Qwen3, Mixtral, Qwen3-MoE, SmolLM2), defaults, rope_scaling variants, unsupported architectures and wrong JSON types
// (errors naming key and file), validation (with upper bounds, and floats too large for int64),
// and parameter counts checked against published ones (an overflowing count is an error).
#include <gtest/gtest.h>

#include "core/projections.h"
#include "model/config.h"
#include "io_test_util.h"

namespace qlora {
namespace {

using json = nlohmann::json;
using test::expect_error;

// SmolLM2-135M-Instruct's config.json (abridged to the fields we read).
json smollm2() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152,
    "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-05, "rope_theta": 100000, "rope_scaling": null, "tie_word_embeddings": true,
    "attention_bias": false, "mlp_bias": false, "bos_token_id": 1, "eos_token_id": 2,
    "pad_token_id": 2, "torch_dtype": "bfloat16", "hidden_act": "silu"})");
}

// One projection table for every module: names, module paths, lookup and (out, in) shapes.
TEST(Config, ProjectionTable) {
  EXPECT_EQ(projection_list(), "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj");
  EXPECT_EQ(projection_path(kProjQ), "self_attn.q_proj");
  EXPECT_EQ(projection_path(kProjO), "self_attn.o_proj");
  EXPECT_EQ(projection_path(kProjGate), "mlp.gate_proj");
  EXPECT_EQ(projection_index("down_proj"), kProjDown);
  EXPECT_EQ(projection_index("lm_head"), -1);
  EXPECT_EQ(all_projection_names().size(), size_t(kProjCount));
  const LlamaConfig c = LlamaConfig::from_hf_json(smollm2(), "smol/config.json");
  EXPECT_EQ(c.projection_shape(kProjQ), (std::pair<int64_t, int64_t>{576, 576}));
  EXPECT_EQ(c.projection_shape(kProjK), (std::pair<int64_t, int64_t>{192, 576}));
  EXPECT_EQ(c.projection_shape(kProjO), (std::pair<int64_t, int64_t>{576, 576}));
  EXPECT_EQ(c.projection_shape(kProjUp), (std::pair<int64_t, int64_t>{1536, 576}));
  EXPECT_EQ(c.projection_shape(kProjDown), (std::pair<int64_t, int64_t>{576, 1536}));
}

TEST(Config, ParsesSmolLM2) {
  const LlamaConfig c = LlamaConfig::from_hf_json(smollm2(), "smol/config.json");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.num_key_value_heads, 3);
  EXPECT_EQ(c.head_dim, 64);  // 576 / 9
  EXPECT_EQ(c.q_dim(), 576);
  EXPECT_EQ(c.kv_dim(), 192);
  EXPECT_EQ(c.rope_theta, 100000.0);
  EXPECT_TRUE(c.rope_scaling.type.empty());
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  // Published size of SmolLM2-135M: 134,515,008 parameters (tied head counted once).
  EXPECT_EQ(c.parameter_count(), 134515008);
}

TEST(Config, DefaultsForOptionalFields) {
  json j = smollm2();
  for (const char* k : {"num_key_value_heads", "rope_scaling", "tie_word_embeddings", "attention_bias",
                        "mlp_bias", "rope_theta", "rms_norm_eps", "bos_token_id", "eos_token_id",
                        "pad_token_id", "torch_dtype", "max_position_embeddings", "architectures"})
    j.erase(k);
  const LlamaConfig c = LlamaConfig::from_hf_json(j, "c.json");
  EXPECT_EQ(c.num_key_value_heads, 9);
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.bos_token_id, -1);
  EXPECT_TRUE(c.eos_token_ids.empty());
  EXPECT_EQ(c.max_position_embeddings, 2048);
  // An explicit head_dim wins over hidden_size / heads.
  j["head_dim"] = 128;
  EXPECT_EQ(LlamaConfig::from_hf_json(j, "c.json").head_dim, 128);
}

TEST(Config, Llama31RopeScalingAndEosList) {
  json j = smollm2();
  j["rope_scaling"] = json::parse(R"({"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192, "rope_type": "llama3"})");
  j["eos_token_id"] = {128001, 128008, 128009};
  j["vocab_size"] = 128256;
  const LlamaConfig c = LlamaConfig::from_hf_json(j, "c.json");
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));

  j["rope_scaling"] = json::parse(R"({"type": "linear", "factor": 4.0})");  // older spelling
  const LlamaConfig lin = LlamaConfig::from_hf_json(j, "c.json");
  EXPECT_EQ(lin.rope_scaling.type, "linear");
  EXPECT_EQ(lin.rope_scaling.factor, 4.0);

  j["rope_scaling"] = json::parse(R"({"rope_type": "yarn", "factor": 4.0})");
  expect_error([&] { LlamaConfig::from_hf_json(j, "dir/config.json"); },
               {"[config]", "rope_scaling", "dir/config.json", "yarn", "llama3, linear"});
}

TEST(Config, Qwen2HasAttentionBiasAndMistralASlidingWindow) {
  json q = smollm2();
  q["architectures"] = {"Qwen2ForCausalLM"};
  q["model_type"] = "qwen2";
  q.erase("attention_bias");
  q["sliding_window"] = 32768;
  q["use_sliding_window"] = false;
  const LlamaConfig qc = LlamaConfig::from_hf_json(q, "q.json");
  EXPECT_EQ(qc.model_type, "qwen2");
  EXPECT_TRUE(qc.attention_bias);
  EXPECT_EQ(qc.sliding_window, 0);
  EXPECT_EQ(qc.parameter_count(), 134515008 + 30 * (576 + 2 * 192));

  json m = smollm2();
  m["architectures"] = {"MistralForCausalLM"};
  m["model_type"] = "mistral";
  m["sliding_window"] = 4096;
  const LlamaConfig mc = LlamaConfig::from_hf_json(m, "m.json");
  EXPECT_EQ(mc.architecture, "MistralForCausalLM");
  EXPECT_EQ(mc.sliding_window, 4096);
  m["sliding_window"] = nullptr;
  EXPECT_EQ(LlamaConfig::from_hf_json(m, "m.json").sliding_window, 0);
}

// Qwen3: per-head q/k norms (2 * head_dim weights per layer), attention_bias read (false), an
// explicit head_dim; its layer-dependent sliding window is refused naming the key.
TEST(Config, Qwen3HasHeadNormsAndRefusesItsSlidingWindow) {
  json q = smollm2();
  q["architectures"] = {"Qwen3ForCausalLM"};
  q["model_type"] = "qwen3";
  q["head_dim"] = 128;  // 9 heads x 128 = 1152 != hidden_size 576
  q["use_sliding_window"] = false;
  q["sliding_window"] = nullptr;
  const LlamaConfig qc = LlamaConfig::from_hf_json(q, "q.json");
  EXPECT_EQ(qc.architecture, "Qwen3ForCausalLM");
  EXPECT_TRUE(qc.qk_norm);
  EXPECT_FALSE(qc.attention_bias);
  EXPECT_EQ(qc.q_dim(), 9 * 128);
  const LlamaConfig base = LlamaConfig::from_hf_json(smollm2(), "s.json");
  // q and o grow from 576 to 1152 columns/rows, k and v from 192 to 384 rows; plus 2 x 128 per layer.
  EXPECT_EQ(qc.parameter_count() - base.parameter_count(), 30 * (2 * 576 * 576 + 2 * 192 * 576 + 2 * 128));
  const LlamaConfig back = LlamaConfig::from_hf_json(qc.to_hf_json(), "back.json");
  EXPECT_EQ(back.to_hf_json().dump(), qc.to_hf_json().dump());
  EXPECT_TRUE(back.qk_norm);
  EXPECT_FALSE(LlamaConfig::from_hf_json(smollm2(), "s.json").qk_norm);

  q["use_sliding_window"] = true;
  q["sliding_window"] = 4096;
  expect_error([&] { LlamaConfig::from_hf_json(q, "q.json"); }, {"[config]", "use_sliding_window", "q.json", "qwen3"});
}

// Mixtral 8x7B's config.json: 8 experts, 2 per token, a router per layer; the published count
// (46.7B, every expert) from the config alone; router jitter and k > E are refused.
json mixtral_8x7b() {
  return json::parse(R"({
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 32000,
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": null, "tie_word_embeddings": false,
    "num_local_experts": 8, "num_experts_per_tok": 2, "output_router_logits": false,
    "router_aux_loss_coef": 0.02, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16",
    "hidden_act": "silu"})");
}

TEST(Config, MixtralHasExpertsAndARouter) {
  json m = mixtral_8x7b();
  const LlamaConfig c = LlamaConfig::from_hf_json(m, "mixtral/config.json");
  EXPECT_TRUE(c.moe());
  EXPECT_EQ(c.num_local_experts, 8);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_DOUBLE_EQ(c.router_aux_loss_coef, 0.02);
  EXPECT_FALSE(c.output_router_logits);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(c.parameter_count(), 46'702'792'704);
  const LlamaConfig back = LlamaConfig::from_hf_json(c.to_hf_json(), "back.json");
  EXPECT_EQ(back.to_hf_json().dump(), c.to_hf_json().dump());
  EXPECT_FALSE(LlamaConfig::from_hf_json(smollm2(), "s.json").moe());

  m["router_jitter_noise"] = 0.1;
  expect_error([&] { LlamaConfig::from_hf_json(m, "mixtral/config.json"); },
               {"[config]", "router_jitter_noise", "mixtral/config.json"});
  m["router_jitter_noise"] = 0.0;
  m["num_experts_per_tok"] = 9;
  expect_error([&] { LlamaConfig::from_hf_json(m, "mixtral/config.json"); },
               {"[config]", "num_experts_per_tok", "mixtral/config.json", "got 9"});
  // Each limit alone is allowed, but 4096 layers × 4096 experts would name 50 M expert tensors.
  m["num_experts_per_tok"] = 2;
  m["num_hidden_layers"] = 4096;
  m["num_local_experts"] = 4096;
  expect_error([&] { LlamaConfig::from_hf_json(m, "mixtral/config.json"); },
               {"[config]", "expert matrices", "mixtral/config.json"});
}

// Qwen/Qwen3-30B-A3B's config.json: 128 experts (spelled num_experts), 8 per token, renormalised;
// 30,532,122,624 parameters (the estimator's preset, from the same shapes). mlp_only_layers makes
// a layer dense again (intermediate_size, no router); an index out of range is refused.
json qwen3_30b_a3b() {
  return json::parse(R"({
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "vocab_size": 151936,
    "hidden_size": 2048, "intermediate_size": 6144, "moe_intermediate_size": 768, "num_hidden_layers": 48,
    "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": false, "attention_bias": false,
    "num_experts": 128, "num_experts_per_tok": 8, "norm_topk_prob": true, "decoder_sparse_step": 1,
    "mlp_only_layers": [], "output_router_logits": false, "router_aux_loss_coef": 0.001,
    "use_sliding_window": false, "sliding_window": null, "bos_token_id": 151643, "eos_token_id": 151645,
    "torch_dtype": "bfloat16", "hidden_act": "silu"})");
}

TEST(Config, Qwen3MoeExpertsAndDenseLayers) {
  json q = qwen3_30b_a3b();
  const LlamaConfig c = LlamaConfig::from_hf_json(q, "qwen3moe/config.json");
  EXPECT_TRUE(c.moe());
  EXPECT_TRUE(c.qk_norm);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.num_local_experts, 128);
  EXPECT_EQ(c.moe_intermediate_size, 768);
  EXPECT_EQ(c.moe_layer_count(), 48);
  EXPECT_EQ(c.parameter_count(), 30'532'122'624);
  const LlamaConfig back = LlamaConfig::from_hf_json(c.to_hf_json(), "back.json");
  EXPECT_EQ(back.to_hf_json().dump(), c.to_hf_json().dump());
  EXPECT_FALSE(LlamaConfig::from_hf_json(mixtral_8x7b(), "m.json").moe_layer(-1));

  // Layer 3 dense, and every other layer sparse: 23 sparse layers of 48.
  q["mlp_only_layers"] = {3};
  q["decoder_sparse_step"] = 2;
  const LlamaConfig mixed = LlamaConfig::from_hf_json(q, "qwen3moe/config.json");
  EXPECT_FALSE(mixed.moe_layer(0));
  EXPECT_TRUE(mixed.moe_layer(1));
  EXPECT_FALSE(mixed.moe_layer(3));
  EXPECT_EQ(mixed.moe_layer_count(), 23);
  const int64_t sparse_mlp = 128 * (3 * 2048 * 768 + 2048), dense_mlp = 3 * 2048 * 6144;
  EXPECT_EQ(c.parameter_count() - mixed.parameter_count(), 25 * (sparse_mlp - dense_mlp));
  q["num_local_experts"] = 64;  // transformers 5 writes the alias; it wins over num_experts
  EXPECT_EQ(LlamaConfig::from_hf_json(q, "qwen3moe/config.json").num_local_experts, 64);

  q["mlp_only_layers"] = {48};
  expect_error([&] { LlamaConfig::from_hf_json(q, "qwen3moe/config.json"); },
               {"[config]", "mlp_only_layers", "qwen3moe/config.json", "48"});
  q["mlp_only_layers"] = "all";
  expect_error([&] { LlamaConfig::from_hf_json(q, "qwen3moe/config.json"); },
               {"[config]", "mlp_only_layers", "expected a list"});
}

TEST(Config, UnsupportedArchitecture) {
  json j = smollm2();
  j["architectures"] = {"GPT2LMHeadModel"};
  j["model_type"] = "gpt2";
  expect_error([&] { LlamaConfig::from_hf_json(j, "/m/config.json"); },
               {"[config] unsupported architecture GPT2LMHeadModel in /m/config.json; supported:",
                "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"});
  j.erase("architectures");
  expect_error([&] { LlamaConfig::from_hf_json(j, "/m/config.json"); },
               {"unsupported architecture", "gpt2", "/m/config.json"});
  json mismatch = smollm2();
  mismatch["model_type"] = "qwen2";
  expect_error([&] { LlamaConfig::from_hf_json(mismatch, "x.json"); }, {"x.json", "LlamaForCausalLM", "qwen2"});
}

TEST(Config, WrongTypesNameKeyAndFile) {
  json j = smollm2();
  j["hidden_size"] = "576";
  expect_error([&] { LlamaConfig::from_hf_json(j, "a/config.json"); },
               {"[config] key 'hidden_size' in a/config.json: expected an integer, got string"});
  j = smollm2();
  j["tie_word_embeddings"] = 1;
  expect_error([&] { LlamaConfig::from_hf_json(j, "a.json"); }, {"'tie_word_embeddings'", "a.json", "bool"});
  j = smollm2();
  j["eos_token_id"] = {1, "two"};
  expect_error([&] { LlamaConfig::from_hf_json(j, "a.json"); }, {"'eos_token_id'", "a.json"});
  j = smollm2();
  j["rms_norm_eps"] = "tiny";
  expect_error([&] { LlamaConfig::from_hf_json(j, "a.json"); }, {"'rms_norm_eps'", "a.json", "number"});
  j = smollm2();
  j["rope_scaling"] = "linear";
  expect_error([&] { LlamaConfig::from_hf_json(j, "a.json"); }, {"'rope_scaling'", "a.json"});
  j = smollm2();
  j.erase("num_hidden_layers");
  expect_error([&] { LlamaConfig::from_hf_json(j, "a.json"); }, {"'num_hidden_layers'", "missing", "a.json"});
  expect_error([&] { LlamaConfig::from_hf_json(json::array(), "a.json"); }, {"a.json", "object"});
}

TEST(Config, ValidateRejectsInconsistentShapes) {
  json j = smollm2();
  j["num_key_value_heads"] = 4;  // 9 heads do not split into 4 groups
  expect_error([&] { LlamaConfig::from_hf_json(j, "v.json"); }, {"v.json", "num_key_value_heads 4"});
  j = smollm2();
  j["hidden_size"] = 577;
  expect_error([&] { LlamaConfig::from_hf_json(j, "v.json"); }, {"v.json", "not divisible"});
  j = smollm2();
  j["head_dim"] = 63;
  expect_error([&] { LlamaConfig::from_hf_json(j, "v.json"); }, {"v.json", "even head_dim"});
  j = smollm2();
  j["mlp_bias"] = true;
  expect_error([&] { LlamaConfig::from_hf_json(j, "v.json"); }, {"v.json", "mlp_bias"});
  j = smollm2();
  j["vocab_size"] = 0;
  expect_error([&] { LlamaConfig::from_hf_json(j, "v.json"); }, {"'vocab_size'", "v.json", "positive"});
}

TEST(Config, FileRoundTrip) {
  test::TempDir dir;
  json j = smollm2();
  j["rope_scaling"] = json::parse(R"({"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192, "rope_type": "llama3"})");
  j["eos_token_id"] = {2, 5};
  const std::string path = dir.file("config.json");
  test::write_text(path, j.dump(2));
  const LlamaConfig a = LlamaConfig::from_hf_file(path);
  test::write_text(path, a.to_hf_json().dump(2));
  const LlamaConfig b = LlamaConfig::from_hf_file(path);
  EXPECT_EQ(b.to_hf_json(), a.to_hf_json());
  EXPECT_EQ(b.rope_scaling.factor, 32.0);
  EXPECT_EQ(b.eos_token_ids, (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(b.head_dim, 64);
  EXPECT_TRUE(b.tie_word_embeddings);

  test::write_text(path, "{\"hidden_size\": 5,");
  expect_error([&] { LlamaConfig::from_hf_file(path); }, {"[config] malformed JSON in", path});
  expect_error([&] { LlamaConfig::from_hf_file(dir.file("nope.json")); }, {"nope.json"});
}

TEST(Config, Stories260KParameterCount) {
  LlamaConfig c;
  c.vocab_size = 512;
  c.hidden_size = 64;
  c.intermediate_size = 172;
  c.num_hidden_layers = 5;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  c.head_dim = 8;
  c.tie_word_embeddings = true;
  c.validate("stories");
  EXPECT_EQ(c.parameter_count(), 260032);  // the model card's count
}

json small_config() {
  return json{{"model_type", "llama"},   {"vocab_size", 32},       {"hidden_size", 16},
              {"intermediate_size", 32}, {"num_hidden_layers", 2}, {"num_attention_heads", 2},
              {"max_position_embeddings", 64}};
}

TEST(Config, FloatsOutsideInt64AndHugeDimsNameTheKey) {
  auto j = small_config();
  j["hidden_size"] = 1e30;  // int64_t(1e30) is undefined behaviour
  expect_error([&] { LlamaConfig::from_hf_json(j, "c.json"); }, {"[config]", "'hidden_size'", "c.json", "fits int64"});
  j = small_config();
  j["num_hidden_layers"] = uint64_t(1) << 63;  // an unsigned JSON integer past int64
  expect_error([&] { LlamaConfig::from_hf_json(j, "c.json"); }, {"'num_hidden_layers'", "fits int64"});
  j = small_config();
  j["intermediate_size"] = int64_t(1) << 40;
  expect_error([&] { LlamaConfig::from_hf_json(j, "c.json"); }, {"'intermediate_size'", "at most 16777216"});
  j = small_config();
  j["vocab_size"] = 64.0;  // integral floats stay accepted
  EXPECT_EQ(LlamaConfig::from_hf_json(j, "c.json").vocab_size, 64);
}

TEST(Config, ParameterCountOverflowIsAnError) {
  // Each dimension within its bound, their product not: 3 * C * F * L = 3 * 2^64.
  auto j = small_config();
  j["hidden_size"] = 1 << 24;
  j["intermediate_size"] = 1 << 24;
  j["num_hidden_layers"] = 1 << 16;
  j["num_attention_heads"] = 1;
  const LlamaConfig c = LlamaConfig::from_hf_json(j, "c.json");
  expect_error([&] { (void)c.parameter_count(); }, {"[config]", "parameter count", "overflows"});
}

}  // namespace
}  // namespace qlora
