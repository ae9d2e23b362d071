// bitsandbytes 4-bit checkpoints (quant/bnb_format.h) and `qlora quantize`, against a checkpoint
// that transformers 5.23 + bitsandbytes 0.50.2 wrote on CPU (tests/quant/golden/
// make_bnb_checkpoint_golden.py): we read every quantized weight, write the file back with the same
// keys and the same bytes for every tensor, reproduce bitsandbytes' quantization of a source weight
// byte for byte (NF4 + double quant, FP4 without), and reproduce transformers' logits from the
// dequantized weights. Then the CLI end to end on the stories260K HF fixture: nf4/fp4/int8 layouts,
// the JSON report, and errors exiting non-zero.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/llama.h"
#include "model/loader.h"
#include "quant/bnb_format.h"
#include "quant/int8.h"
#include "quant/nf4.h"
#include "test_paths.h"
#include "cli_runner.h"
#include "quant_test_util.h"

namespace qlora {
namespace {
namespace fs = std::filesystem;

const std::string kGoldenDir = test::source_path("tests/quant/golden/tiny-llama-bnb-nf4");
const std::string kGolden = kGoldenDir + "/model.safetensors";
const std::string kRef = test::source_path("tests/quant/golden/tiny_llama_bnb_ref.safetensors");
const std::string kStoriesHf = test::source_path("tests/golden/fixtures/stories260k-hf");
const char* kLinears[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                          "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

TEST(BnbCheckpoint, ReadsTransformersCheckpoint) {
  const SafetensorsFile f = SafetensorsFile::open(kGolden);
  const auto q = read_bnb_quantized(f);
  ASSERT_EQ(q.size(), 14u);  // 2 layers x 7 linears
  const LlamaConfig c = LlamaConfig::from_hf_file(kGoldenDir + "/config.json");
  for (int l = 0; l < 2; ++l)
    for (const char* m : kLinears) {
      const std::string name = "model.layers." + std::to_string(l) + "." + m + ".weight";
      ASSERT_TRUE(q.count(name)) << name;
      const BnbWeight& w = q.at(name);
      EXPECT_EQ(w.q.type, QuantType::NF4);
      EXPECT_TRUE(w.q.double_quant);
      EXPECT_EQ(w.q.block_size, 64);
      EXPECT_EQ(w.q.nested_block_size, 256);
      EXPECT_EQ(w.dtype, "float32");
      EXPECT_EQ(w.q.shape[1], std::string(m) == "mlp.down_proj" ? c.intermediate_size : c.hidden_size) << name;
    }
  EXPECT_TRUE(is_bnb_state_key("model.layers.0.mlp.up_proj.weight.nested_quant_map"));
  EXPECT_TRUE(is_bnb_state_key("a.weight.quant_state.bitsandbytes__fp4"));
  EXPECT_FALSE(is_bnb_state_key("model.layers.0.mlp.up_proj.weight"));
  EXPECT_FALSE(is_bnb_state_key("model.norm.weight"));
}

TEST(BnbCheckpoint, WriteBackIsByteIdenticalPerTensor) {
  const SafetensorsFile f = SafetensorsFile::open(kGolden);
  const auto q = read_bnb_quantized(f);
  std::vector<std::pair<std::string, Tensor>> dense;
  for (const std::string& key : f.names())
    if (!q.count(key) && !is_bnb_state_key(key)) dense.emplace_back(key, f.get(key));
  EXPECT_EQ(dense.size(), 2u + 2u * 2u + 1u);  // embed, lm_head, 2 norms per layer, final norm
  const fs::path out = fs::temp_directory_path() / "qlora_bnb_roundtrip.safetensors";
  write_bnb_quantized(out.string(), q, dense);
  const SafetensorsFile g = SafetensorsFile::open(out.string());
  std::vector<std::string> a = f.names(), b = g.names();
  std::sort(a.begin(), a.end());
  EXPECT_EQ(a, b);  // same keys; ours sorted by name
  for (const std::string& key : a) {
    ASSERT_TRUE(g.contains(key)) << key;
    EXPECT_TRUE(same_bytes(f.get(key), g.get(key))) << key << ": " << f.get(key).describe() << " vs "
                                                    << g.get(key).describe();
  }
  EXPECT_EQ(g.metadata().at("format"), "pt");
  fs::remove(out);
}

TEST(BnbCheckpoint, QuantizerMatchesBitsandbytesByteForByte) {
  const SafetensorsFile ref = SafetensorsFile::open(kRef);
  const SafetensorsFile f = SafetensorsFile::open(kGolden);
  const Tensor src = ref.get("source.q_proj");
  // NF4 + double quant, as transformers stored it. bitsandbytes' CPU path rounds the absmax
  // constants through its lookup table (BnbRounding::Cpu, see double_quant.h).
  const std::string name = "model.layers.0.self_attn.q_proj.weight";
  BnbWeight ours{quantize_4bit(src.data<float>(), src.shape(), QuantType::NF4, 64, true, BnbRounding::Cpu),
                 "float32"};
  for (const auto& [key, t] : bnb_4bit_tensors(name, ours)) {
    ASSERT_TRUE(f.contains(key)) << key;
    EXPECT_TRUE(same_bytes(t, f.get(key))) << key;
  }
  // FP4 without double quantization, as QuantState.as_dict(packed=True) gives it (made on the CPU).
  BnbWeight fp4{quantize_4bit(src.data<float>(), src.shape(), QuantType::FP4, 64, false, BnbRounding::Cpu),
                "float32"};
  const auto parts = bnb_4bit_tensors("fp4.q_proj.weight", fp4);
  EXPECT_EQ(parts.size(), 4u);
  for (const auto& [key, t] : parts) {
    ASSERT_TRUE(ref.contains(key)) << key;
    EXPECT_TRUE(same_bytes(t, ref.get(key))) << key;
  }
  const BnbWeight back = read_bnb_4bit(ref, "fp4.q_proj.weight");
  EXPECT_EQ(back.q.type, QuantType::FP4);
  EXPECT_FALSE(back.q.double_quant);
  EXPECT_EQ(test::elements<uint8_t>(back.q.codes), test::elements<uint8_t>(fp4.q.codes));
  EXPECT_EQ(test::elements<float>(back.q.absmax), test::elements<float>(fp4.q.absmax));
}

TEST(BnbCheckpoint, DequantizedGoldenReproducesTransformersLogits) {
  const SafetensorsFile ref = SafetensorsFile::open(kRef);
  // load_model recognises the bnb quant_state entries and dequantizes the packed weights.
  LlamaModelFile m = load_model(kGoldenDir);
  EXPECT_NE(m.file_dtype.find("bnb-nf4"), std::string::npos) << m.file_dtype;
  const Tensor ids_t = ref.get("input_ids");
  const std::vector<int32_t> ids(ids_t.data<int32_t>(), ids_t.data<int32_t>() + ids_t.numel());
  const LlamaModel model(std::move(m));
  const Tensor logits = model.forward_sequence(ids);
  auto max_diff = [&](const Tensor& expected) {
    EXPECT_EQ(logits.shape(), expected.shape());
    float worst = 0.0f;
    for (int64_t i = 0; i < std::min(logits.numel(), expected.numel()); ++i)
      worst = std::max(worst, std::abs(logits.data<float>()[i] - expected.data<float>()[i]));
    return worst;
  };
  // "logits": torch's f32 forward with bitsandbytes' dequantized weights. Both sides f32 with
  // different summation orders (~1e-6 relative on logits of magnitude ~0.5); 1e-4 leaves margin
  // while a wrong block, nibble order or absmax would be off by > 1e-2.
  constexpr float kExactTol = 1e-4f;
  EXPECT_LT(max_diff(ref.get("logits")), kExactTol);
  // transformers' own forward of the bnb-loaded model: bitsandbytes' CPU 4-bit matmul is 2.2e-3 off
  // the exact product on this prompt (measured by the generator); 5e-3 allows for that.
  constexpr float kBnbForwardTol = 5e-3f;
  EXPECT_LT(max_diff(ref.get("logits_bnb_forward")), kBnbForwardTol);
}

TEST(BnbCheckpoint, ReaderRejectsInconsistentState) {
  const SafetensorsFile f = SafetensorsFile::open(kGolden);
  auto q = read_bnb_quantized(f);
  const std::string name = "model.layers.0.self_attn.q_proj.weight";
  auto parts = bnb_4bit_tensors(name, q.at(name));
  parts.erase(parts.begin() + 1);  // drop the absmax
  const fs::path out = fs::temp_directory_path() / "qlora_bnb_bad.safetensors";
  write_safetensors(out.string(), parts);
  const SafetensorsFile g = SafetensorsFile::open(out.string());
  try {
    read_bnb_4bit(g, name);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(name + ".absmax"), std::string::npos) << e.what();
  }
  fs::remove(out);
}

// ---- the CLI ----

using test::RunResult;

// stdout only: --json output must parse without the progress bar on stderr.
RunResult run(const std::string& args) { return test::run_cli(args, /*merge_stderr=*/false); }

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

TEST(QuantizeCli, Nf4DoubleQuantMatchesLibraryAndReportsError) {
  const fs::path out = fs::temp_directory_path() / "qlora_quantize_nf4";
  fs::remove_all(out);
  const RunResult r = run("quantize " + kStoriesHf + " --type nf4 --double-quant -o " + out.string() + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  const LlamaModelFile src = load_model(kStoriesHf);
  const int64_t L = src.config.num_hidden_layers;
  ASSERT_EQ(j["tensors"].size(), size_t(7 * L));

  const SafetensorsFile f = SafetensorsFile::open((out / "model.safetensors").string());
  const auto q = read_bnb_quantized(f);
  ASSERT_EQ(q.size(), size_t(7 * L));
  double sum_sq = 0.0, max_abs = 0.0, bits = 0.0;
  int64_t n_total = 0;
  for (int64_t l = 0; l < L; ++l) {
    const LlamaLayerWeights& lw = src.weights.layers[size_t(l)];
    const Tensor* ws[] = {&lw.q_proj, &lw.k_proj, &lw.v_proj, &lw.o_proj, &lw.gate_proj, &lw.up_proj, &lw.down_proj};
    for (int i = 0; i < 7; ++i) {
      const std::string name = "model.layers." + std::to_string(l) + "." + kLinears[i] + ".weight";
      const QuantTensor expect = quantize_4bit(*ws[i], QuantType::NF4, 64, true);
      const BnbWeight& got = q.at(name);
      EXPECT_EQ(test::elements<uint8_t>(got.q.codes), test::elements<uint8_t>(expect.codes)) << name;
      EXPECT_EQ(test::elements<uint8_t>(got.q.absmax_codes), test::elements<uint8_t>(expect.absmax_codes)) << name;
      EXPECT_EQ(test::elements<float>(got.q.nested_absmax), test::elements<float>(expect.nested_absmax)) << name;
      EXPECT_EQ(got.q.offset, expect.offset) << name;
      const Tensor back = dequantize_4bit(got.q);
      for (int64_t k = 0; k < back.numel(); ++k) {
        const double d = double(back.data<float>()[k]) - double(ws[i]->data<float>()[k]);
        sum_sq += d * d;
        max_abs = std::max(max_abs, std::abs(d));
      }
      bits += got.q.bits_per_param() * double(back.numel());
      n_total += back.numel();
    }
  }
  EXPECT_NEAR(j["rmse"].get<double>(), std::sqrt(sum_sq / double(n_total)), 1e-9);
  EXPECT_DOUBLE_EQ(j["max_abs"].get<double>(), max_abs);
  EXPECT_NEAR(j["bits_per_param"].get<double>(), bits / double(n_total), 1e-9);
  EXPECT_GT(j["bits_per_param"].get<double>(), 4.0);
  EXPECT_LT(j["bits_per_param"].get<double>(), 4.5);  // double quant: below 4.5 (block 64 f32 absmax)
  // Dense tensors kept as they were; tied LM head not duplicated.
  EXPECT_TRUE(same_bytes(f.get("model.embed_tokens.weight"), src.weights.embed_tokens));
  EXPECT_FALSE(f.contains("lm_head.weight"));
  EXPECT_TRUE(f.contains("model.layers.4.post_attention_layernorm.weight"));
  const auto config = read_json(out / "config.json");
  EXPECT_EQ(config["quantization_config"]["quant_method"], "bitsandbytes");
  EXPECT_EQ(config["quantization_config"]["bnb_4bit_quant_type"], "nf4");
  EXPECT_EQ(config["quantization_config"]["bnb_4bit_use_double_quant"], true);
  EXPECT_EQ(config["hidden_size"], 64);
  EXPECT_TRUE(fs::exists(out / "generation_config.json"));
  fs::remove_all(out);
}

TEST(QuantizeCli, Fp4AndInt8Layouts) {
  const fs::path out = fs::temp_directory_path() / "qlora_quantize_other";
  fs::remove_all(out);
  RunResult r = run("quantize " + kStoriesHf + " --type fp4 --block-size 128 -o " + out.string() + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  {
    const SafetensorsFile f = SafetensorsFile::open((out / "model.safetensors").string());
    const BnbWeight w = read_bnb_4bit(f, "model.layers.2.mlp.down_proj.weight");
    EXPECT_EQ(w.q.type, QuantType::FP4);
    EXPECT_EQ(w.q.block_size, 128);
    EXPECT_FALSE(w.q.double_quant);
    EXPECT_FALSE(f.contains("model.layers.2.mlp.down_proj.weight.nested_absmax"));
    EXPECT_NEAR(nlohmann::json::parse(r.out)["bits_per_param"].get<double>(), 4.25, 0.01);  // 4 + 32/128
  }
  const LlamaModelFile src = load_model(kStoriesHf);
  const Tensor& up = src.weights.layers[1].up_proj;  // (F, C)
  // int8, row-wise: LLM.int8's layout (weight i8 + SCB = per-row absmax).
  r = run("quantize " + kStoriesHf + " --type int8 -o " + out.string() + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  {
    const SafetensorsFile f = SafetensorsFile::open((out / "model.safetensors").string());
    const Tensor w = f.get("model.layers.1.mlp.up_proj.weight"), scb = f.get("model.layers.1.mlp.up_proj.SCB");
    ASSERT_EQ(w.dtype(), DType::I8);
    ASSERT_EQ(w.shape(), up.shape());
    ASSERT_EQ(scb.numel(), up.dim(0));
    const Int8Quantized expect = quantize_int8_blockwise(up.data<float>(), up.numel(), up.dim(1));
    EXPECT_EQ(std::memcmp(w.raw(), expect.values.data(), w.nbytes()), 0);
    EXPECT_EQ(std::memcmp(scb.raw(), expect.absmax.data(), scb.nbytes()), 0);
    EXPECT_EQ(read_json(out / "config.json")["quantization_config"]["load_in_8bit"], true);
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_GT(j["bits_per_param"].get<double>(), 8.0);
    EXPECT_LT(j["rmse"].get<double>(), 1e-2);
  }
  // int8, block-wise: weight i8 + weight.absmax.
  r = run("quantize " + kStoriesHf + " --type int8 --block-size 32 -o " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  {
    const SafetensorsFile f = SafetensorsFile::open((out / "model.safetensors").string());
    EXPECT_EQ(f.get("model.layers.1.mlp.up_proj.weight.absmax").numel(), up.numel() / 32);
    EXPECT_FALSE(f.contains("model.layers.1.mlp.up_proj.SCB"));
    EXPECT_EQ(read_json(out / "config.json")["quantization_config"]["quant_method"], "qlora_int8_blockwise");
  }
  fs::remove_all(out);
}

TEST(QuantizeCli, Bf16SourceKeepsItsDtype) {
  const std::string src_dir = test::source_path("tests/golden/fixtures/llama-bf16");
  const fs::path out = fs::temp_directory_path() / "qlora_quantize_bf16";
  fs::remove_all(out);
  const RunResult r = run("quantize " + src_dir + " --type nf4 --double-quant -o " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const SafetensorsFile src = SafetensorsFile::open(src_dir + "/model.safetensors");
  const SafetensorsFile f = SafetensorsFile::open((out / "model.safetensors").string());
  EXPECT_TRUE(same_bytes(f.get("model.embed_tokens.weight"), src.get("model.embed_tokens.weight")));
  EXPECT_TRUE(same_bytes(f.get("model.norm.weight"), src.get("model.norm.weight")));
  const BnbWeight w = read_bnb_4bit(f, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(w.dtype, "bfloat16");
  // The codes are those of the bf16 weights widened to f32.
  const Tensor q = src.get("model.layers.0.self_attn.q_proj.weight").to(DType::F32);
  EXPECT_EQ(test::elements<uint8_t>(w.q.codes), test::elements<uint8_t>(quantize_4bit(q, QuantType::NF4, 64, true).codes));
  fs::remove_all(out);
}

TEST(QuantizeCli, BadInputExitsNonZero) {
  const fs::path out = fs::temp_directory_path() / "qlora_quantize_bad";
  EXPECT_NE(run("quantize " + kStoriesHf + " --type int8 --double-quant -o " + out.string()).exit_code, 0);
  EXPECT_NE(run("quantize " + kStoriesHf + " --type nf4 --block-size 48 -o " + out.string()).exit_code, 0);
  EXPECT_NE(run("quantize " + kStoriesHf + " --type q3 -o " + out.string()).exit_code, 0);
  EXPECT_NE(run("quantize /nonexistent/model -o " + out.string()).exit_code, 0);
  EXPECT_FALSE(fs::exists(out / "model.safetensors"));
  fs::remove_all(out);
}

}  // namespace
}  // namespace qlora
