// PEFT adapter folders: write -> read round trip (bit-exact), the adapter_config.json fields peft
// needs, TrainModel -> adapter -> TrainModel, checkpoint folders as adapter sources, and the
// errors on bad input naming the file and key (malformed JSON, wrong peft_type, missing lora_B,
// rank mismatch, unknown module).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/peft_adapter.h"
#include "io/safetensors.h"
#include "io_test_util.h"
#include "train/adapter_export.h"
#include "train_test_util.h"

namespace qlora {
namespace {

using test::expect_error;
using test::TempDir;

TrainModelOptions lora_options() {
  TrainModelOptions o;
  o.method = TrainMethod::Lora;
  o.lora.r = 4;
  o.lora.lora_alpha = 8;
  o.lora.seed = 5;
  o.lora.target_modules = {"q_proj", "v_proj", "down_proj"};
  return o;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

TEST(PeftAdapter, RoundTripIsBitExact) {
  TrainModel model(test::load_fixture("llama-gqa"), lora_options());
  test::randomize_lora_b(model, 11, 0.1);
  const PeftAdapter a = peft_adapter_from_model(model, "tests/golden/fixtures/llama-gqa");
  // 2 layers x 3 modules x (A, B).
  EXPECT_EQ(a.tensors.size(), size_t(model.config().num_hidden_layers) * 3 * 2);
  TempDir dir;
  const std::string out = dir.file("adapter");
  write_peft_adapter(out, a);
  const PeftAdapter b = read_peft_adapter(out);
  EXPECT_EQ(b.config.r, 4);
  EXPECT_EQ(b.config.lora_alpha, 8);
  EXPECT_EQ(b.config.base_model_name_or_path, "tests/golden/fixtures/llama-gqa");
  ASSERT_EQ(b.tensors.size(), a.tensors.size());
  for (const auto& [key, t] : a.tensors) {
    bool found = false;
    for (const auto& [key2, t2] : b.tensors)
      if (key2 == key) {
        found = true;
        EXPECT_TRUE(same_bits(t, t2)) << key;
      }
    EXPECT_TRUE(found) << key;
  }
  const auto [A, B] = b.module("model.layers.1.self_attn.v_proj");
  ASSERT_TRUE(A.defined() && B.defined());
  EXPECT_EQ(A.shape(), (Shape{4, model.config().hidden_size}));
  EXPECT_EQ(B.shape(), (Shape{model.config().kv_dim(), 4}));

  // The config as peft writes it.
  const nlohmann::json j = read_json(out + "/adapter_config.json");
  EXPECT_EQ(j["peft_type"], "LORA");
  EXPECT_EQ(j["task_type"], "CAUSAL_LM");
  EXPECT_EQ(j["r"], 4);
  EXPECT_EQ(j["lora_alpha"], 8);
  EXPECT_EQ(j["bias"], "none");
  EXPECT_EQ(j["fan_in_fan_out"], false);
  EXPECT_EQ(j["inference_mode"], true);
  EXPECT_EQ(j["use_rslora"], false);
  EXPECT_EQ(j["target_modules"], (nlohmann::json{"down_proj", "q_proj", "v_proj"}));

  // Writing again over an existing folder replaces it and keeps unrelated files.
  test::write_text(out + "/README.md", "keep me");
  write_peft_adapter(out, a);
  EXPECT_TRUE(std::filesystem::exists(out + "/README.md"));
}

TEST(PeftAdapter, LoadIntoModelGivesTheSameLogits) {
  TrainModel trained(test::load_fixture("llama-gqa"), lora_options());
  test::randomize_lora_b(trained, 12, 0.1);
  TempDir dir;
  write_peft_adapter(dir.file("a"), peft_adapter_from_model(trained));
  TrainModelOptions other = lora_options();
  other.lora.seed = 99;  // different initial A: everything must come from the file
  TrainModel fresh(test::load_fixture("llama-gqa"), other);
  load_adapter_into_model(fresh, read_peft_adapter(dir.file("a")));
  Rng rng(3);
  std::vector<TrainSequence> seqs = {test::random_sequence(rng, trained.config().vocab_size, 12, 12, 1)};
  const Batch batch = make_batch(seqs, 0, 1);
  EXPECT_TRUE(same_bits(trained.logits(batch), fresh.logits(batch)));

  // A model with another rank or target list refuses it, naming the key.
  TrainModelOptions r8 = lora_options();
  r8.lora.r = 8;
  TrainModel wrong_rank(test::load_fixture("llama-gqa"), r8);
  expect_error([&] { load_adapter_into_model(wrong_rank, read_peft_adapter(dir.file("a"))); }, {"'r'", "4", "8"});
  TrainModelOptions more = lora_options();
  more.lora.target_modules = {"q_proj", "v_proj", "down_proj", "up_proj"};
  TrainModel wrong_targets(test::load_fixture("llama-gqa"), more);
  expect_error([&] { load_adapter_into_model(wrong_targets, read_peft_adapter(dir.file("a"))); },
               {"target_modules", "up_proj"});
}

class PeftAdapterErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    TrainModel model(test::load_fixture("llama-gqa"), lora_options());
    adapter_ = peft_adapter_from_model(model);
    write_peft_adapter(dir_.file("a"), adapter_);
  }
  std::string config_path() const { return dir_.file("a/adapter_config.json"); }
  std::string model_path() const { return dir_.file("a/adapter_model.safetensors"); }
  void edit_config(const std::function<void(nlohmann::json&)>& fn) {
    nlohmann::json j = read_json(config_path());
    fn(j);
    test::write_text(config_path(), j.dump(2));
  }
  TempDir dir_;
  PeftAdapter adapter_;
};

TEST_F(PeftAdapterErrors, MalformedJson) {
  test::write_text(config_path(), "{\"r\": 4, ");
  expect_error([&] { read_peft_adapter(dir_.file("a")); }, {"adapter_config.json", "malformed JSON"});
}

TEST_F(PeftAdapterErrors, BadConfigFields) {
  edit_config([](nlohmann::json& j) { j["peft_type"] = "IA3"; });
  expect_error([&] { read_peft_adapter(dir_.file("a")); }, {"adapter_config.json", "'peft_type'", "IA3"});
  edit_config([](nlohmann::json& j) {
    j["peft_type"] = "LORA";
    j.erase("r");
  });
  expect_error([&] { read_peft_adapter(dir_.file("a")); }, {"adapter_config.json", "'r'", "missing"});
  edit_config([](nlohmann::json& j) {
    j["r"] = 4;
    j["target_modules"] = {"q_proj", "lm_head"};
  });
  expect_error([&] { read_peft_adapter(dir_.file("a")); }, {"adapter_config.json", "'target_modules'", "lm_head"});
  edit_config([](nlohmann::json& j) {
    j["target_modules"] = {"q_proj", "v_proj", "down_proj"};
    j["use_dora"] = true;
  });
  expect_error([&] { read_peft_adapter(dir_.file("a")); }, {"adapter_config.json", "'use_dora'"});
}

TEST_F(PeftAdapterErrors, MissingLoraB) {
  std::vector<std::pair<std::string, Tensor>> kept;
  for (const auto& [k, t] : adapter_.tensors)
    if (k != "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight") kept.emplace_back(k, t);
  write_safetensors(model_path(), kept);
  expect_error([&] { read_peft_adapter(dir_.file("a")); },
               {"adapter_model.safetensors", "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight", "missing"});
}

TEST_F(PeftAdapterErrors, RankMismatch) {
  edit_config([](nlohmann::json& j) { j["r"] = 8; });
  expect_error([&] { read_peft_adapter(dir_.file("a")); },
               {"adapter_model.safetensors", "lora_A.weight", "r = 8"});
}

TEST_F(PeftAdapterErrors, UntargetedModule) {
  edit_config([](nlohmann::json& j) { j["target_modules"] = {"q_proj", "v_proj"}; });
  expect_error([&] { read_peft_adapter(dir_.file("a")); }, {"adapter_model.safetensors", "down_proj", "target_modules"});
}

TEST(PeftAdapter, CheckpointFolderAsSource) {
  TrainModel model(test::load_fixture("llama-gqa"), lora_options());
  test::randomize_lora_b(model, 13, 0.1);
  TempDir dir;
  const std::string ckpt = dir.file("checkpoint-3");
  std::filesystem::create_directories(ckpt);
  std::vector<std::pair<std::string, Tensor>> values;
  for (const Param& p : model.parameters()) values.emplace_back(p.name, p.value);
  write_safetensors(ckpt + "/model.safetensors", values);
  test::write_text(ckpt + "/trainer_state.json", "{\"step\": 3}");
  // No alpha anywhere: an error asking for --lora-alpha.
  expect_error([&] { read_adapter_source(ckpt); }, {"checkpoint-3", "--lora-alpha"});
  const PeftAdapter a = read_adapter_source(ckpt, 8.0);
  EXPECT_EQ(a.config.r, 4);
  EXPECT_EQ(a.config.target_modules, (std::vector<std::string>{"down_proj", "q_proj", "v_proj"}));
  TrainModel fresh(test::load_fixture("llama-gqa"), lora_options());
  load_adapter_into_model(fresh, a);
  std::vector<Param> want = model.parameters(), got = fresh.parameters();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_TRUE(same_bits(want[i].value, got[i].value)) << want[i].name;
}

}  // namespace
}  // namespace qlora
