// load_model over every format: seeded random Hugging Face folders (single file, sharded, tied,
// bf16, Qwen2 with biases) and every validation error (missing tensor, wrong shape, bad dtype,
// missing files); hand-written GGUF files (llama with Q8_0/Q4_0/Q4_1 and permuted q/k rows,
// qwen2 unpermuted with biases); stories260K converted to an HF folder and back; and
// SmolLM2-135M-Instruct Q4_1 when models/ has it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>

#include "io/ggml_dequant.h"
#include "io/safetensors.h"
#include "io_test_util.h"
#include "model/load_common.h"
#include "model/loader.h"
#include "test_paths.h"

namespace qlora {
namespace {

using json = nlohmann::json;
using test::expect_error;
using test::TempDir;
using Named = std::vector<std::pair<std::string, Tensor>>;

constexpr unsigned kSeed = 20240501;

// Tiny GQA llama: V=40, C=32, F=64, L=2, H=4, Hkv=2, D=8. Every input width is a multiple of 32,
// so the same shapes work as GGUF Q8_0/Q4_x blocks.
json tiny_config(const std::string& model_type = "llama", bool tied = false) {
  json j = {{"model_type", model_type},
            {"vocab_size", 40},
            {"hidden_size", 32},
            {"intermediate_size", 64},
            {"num_hidden_layers", 2},
            {"num_attention_heads", 4},
            {"num_key_value_heads", 2},
            {"rms_norm_eps", 1e-5},
            {"tie_word_embeddings", tied},
            {"bos_token_id", 1},
            {"eos_token_id", 2}};
  j["architectures"] = {model_type == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
  return j;
}

Tensor random_tensor(Shape shape, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 0.5f);
  Tensor t = Tensor::zeros(std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = normal(rng);
  return t;
}

// HF-named random tensors for tiny_config(); with biases for qwen2; lm_head unless tied.
Named tiny_tensors(bool biases, bool lm_head, unsigned seed = kSeed) {
  std::mt19937 rng(seed);
  Named out;
  out.push_back({"model.embed_tokens.weight", random_tensor({40, 32}, rng)});
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.push_back({p + "input_layernorm.weight", random_tensor({32}, rng)});
    out.push_back({p + "self_attn.q_proj.weight", random_tensor({32, 32}, rng)});
    out.push_back({p + "self_attn.k_proj.weight", random_tensor({16, 32}, rng)});
    out.push_back({p + "self_attn.v_proj.weight", random_tensor({16, 32}, rng)});
    if (biases) {
      out.push_back({p + "self_attn.q_proj.bias", random_tensor({32}, rng)});
      out.push_back({p + "self_attn.k_proj.bias", random_tensor({16}, rng)});
      out.push_back({p + "self_attn.v_proj.bias", random_tensor({16}, rng)});
    }
    out.push_back({p + "self_attn.o_proj.weight", random_tensor({32, 32}, rng)});
    out.push_back({p + "post_attention_layernorm.weight", random_tensor({32}, rng)});
    out.push_back({p + "mlp.gate_proj.weight", random_tensor({64, 32}, rng)});
    out.push_back({p + "mlp.up_proj.weight", random_tensor({64, 32}, rng)});
    out.push_back({p + "mlp.down_proj.weight", random_tensor({32, 64}, rng)});
  }
  out.push_back({"model.norm.weight", random_tensor({32}, rng)});
  if (lm_head) out.push_back({"lm_head.weight", random_tensor({40, 32}, rng)});
  return out;
}

void write_folder(const std::string& dir, const json& config, const Named& tensors) {
  std::filesystem::create_directories(dir);
  test::write_text(dir + "/config.json", config.dump(2));
  write_safetensors(dir + "/model.safetensors", tensors);
}

Tensor by_name(const Named& v, const std::string& name) {
  for (const auto& [n, t] : v)
    if (n == name) return t;
  ADD_FAILURE() << "no tensor " << name;
  return {};
}
Named without(Named v, const std::string& name) {
  std::erase_if(v, [&](const auto& p) { return p.first == name; });
  return v;
}
Named replaced(Named v, const std::string& name, Tensor t) {
  for (auto& p : v)
    if (p.first == name) p.second = std::move(t);
  return v;
}

// Visits every (HF name, loaded tensor) of a model.
void for_each_weight(const LlamaModelFile& m, const std::function<void(const std::string&, const Tensor&)>& fn) {
  const auto& w = m.weights;
  fn("model.embed_tokens.weight", w.embed_tokens);
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const auto& L = w.layers[l];
    fn(p + "input_layernorm.weight", L.input_layernorm);
    fn(p + "self_attn.q_proj.weight", L.q_proj);
    fn(p + "self_attn.k_proj.weight", L.k_proj);
    fn(p + "self_attn.v_proj.weight", L.v_proj);
    if (m.config.attention_bias) {
      fn(p + "self_attn.q_proj.bias", L.q_bias);
      fn(p + "self_attn.k_proj.bias", L.k_bias);
      fn(p + "self_attn.v_proj.bias", L.v_bias);
    }
    fn(p + "self_attn.o_proj.weight", L.o_proj);
    fn(p + "post_attention_layernorm.weight", L.post_attention_layernorm);
    fn(p + "mlp.gate_proj.weight", L.gate_proj);
    fn(p + "mlp.up_proj.weight", L.up_proj);
    fn(p + "mlp.down_proj.weight", L.down_proj);
  }
  fn("model.norm.weight", w.norm);
  fn("lm_head.weight", w.lm_head);
}

bool is_matrix(const std::string& name) { return name.find("norm") == std::string::npos && name.find("bias") == std::string::npos; }

void expect_bytes_equal(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_TRUE(a.defined()) << what;
  ASSERT_EQ(a.shape(), b.shape()) << what;
  ASSERT_EQ(a.dtype(), b.dtype()) << what;
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << what;
}

TEST(LoaderHf, F32FolderLoadsExactly) {
  TempDir dir;
  const Named src = tiny_tensors(false, true);
  write_folder(dir.path(), tiny_config(), src);
  const LlamaModelFile m = load_model(dir.path());
  EXPECT_EQ(m.format, "hf");
  EXPECT_EQ(m.file_dtype, "f32");
  EXPECT_EQ(m.path, dir.path());
  EXPECT_EQ(m.config.num_key_value_heads, 2);
  EXPECT_EQ(m.config.head_dim, 8);
  EXPECT_FALSE(m.config.tie_word_embeddings);
  EXPECT_NE(m.weights.lm_head.raw(), m.weights.embed_tokens.raw());
  int n = 0;
  for_each_weight(m, [&](const std::string& name, const Tensor& t) {
    expect_bytes_equal(t, by_name(src, name), name);
    ++n;
  });
  EXPECT_EQ(n, 1 + 2 * 9 + 2);
}

TEST(LoaderHf, Bf16FileToF32AndBf16Weights) {
  TempDir dir;
  Named src = tiny_tensors(false, true);
  for (auto& [name, t] : src) t = t.to(DType::BF16);
  write_folder(dir.path(), tiny_config(), src);

  const LlamaModelFile f = load_model(dir.path(), {DType::F32});
  EXPECT_EQ(f.file_dtype, "bf16");
  for_each_weight(f, [&](const std::string& name, const Tensor& t) {
    expect_bytes_equal(t, by_name(src, name).to(DType::F32), name);
  });
  const LlamaModelFile b = load_model(dir.path(), {DType::BF16});
  for_each_weight(b, [&](const std::string& name, const Tensor& t) {
    // Matrices stay bf16 (bit for bit); norms are always f32.
    expect_bytes_equal(t, is_matrix(name) ? by_name(src, name) : by_name(src, name).to(DType::F32), name);
  });
  expect_error([&] { load_model(dir.path(), {DType::F16}); }, {"[load]", "f32 or bf16", "f16"});
}

TEST(LoaderHf, F32FileToBf16Weights) {
  TempDir dir;
  const Named src = tiny_tensors(false, true);
  write_folder(dir.path(), tiny_config(), src);
  const LlamaModelFile b = load_model(dir.path(), {DType::BF16});
  for_each_weight(b, [&](const std::string& name, const Tensor& t) {
    expect_bytes_equal(t, is_matrix(name) ? by_name(src, name).to(DType::BF16) : by_name(src, name), name);
  });
}

TEST(LoaderHf, TiedHeadSharesTheEmbedding) {
  TempDir dir;
  write_folder(dir.path(), tiny_config("llama", true), tiny_tensors(false, false));
  const LlamaModelFile m = load_model(dir.path());
  EXPECT_TRUE(m.config.tie_word_embeddings);
  EXPECT_EQ(m.weights.lm_head.raw(), m.weights.embed_tokens.raw());
  EXPECT_EQ(m.config.parameter_count(), 40 * 32 + 2 * (2 * 32 + 32 * 32 + 2 * 32 * 16 + 32 * 32 + 3 * 32 * 64) + 32);
}

TEST(LoaderHf, ShardedFolder) {
  TempDir dir;
  const Named src = tiny_tensors(false, true);
  Named a(src.begin(), src.begin() + 10), b(src.begin() + 10, src.end());
  test::write_text(dir.file("config.json"), tiny_config().dump());
  write_safetensors(dir.file("model-00001-of-00002.safetensors"), a);
  write_safetensors(dir.file("model-00002-of-00002.safetensors"), b);
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (const auto& [n, t] : a) index["weight_map"][n] = "model-00001-of-00002.safetensors";
  for (const auto& [n, t] : b) index["weight_map"][n] = "model-00002-of-00002.safetensors";
  test::write_text(dir.file("model.safetensors.index.json"), index.dump());
  const LlamaModelFile m = load_model(dir.path());
  for_each_weight(m, [&](const std::string& name, const Tensor& t) { expect_bytes_equal(t, by_name(src, name), name); });

  // The index names a shard that lacks the tensor.
  index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors";
  test::write_text(dir.file("model.safetensors.index.json"), index.dump());
  expect_error([&] { load_model(dir.path()); },
               {"[load] tensor model.norm.weight is missing from shard", "model-00001-of-00002.safetensors"});
  // A tensor absent from the index.
  index["weight_map"].erase("model.norm.weight");
  test::write_text(dir.file("model.safetensors.index.json"), index.dump());
  expect_error([&] { load_model(dir.path()); },
               {"[load] tensor model.norm.weight is missing from", "model.safetensors.index.json"});
  // A missing shard file.
  index["weight_map"]["model.norm.weight"] = "model-00003-of-00002.safetensors";
  test::write_text(dir.file("model.safetensors.index.json"), index.dump());
  expect_error([&] { load_model(dir.path()); }, {"model-00003-of-00002.safetensors"});
  test::write_text(dir.file("model.safetensors.index.json"), "{\"weight_map\": ");
  expect_error([&] { load_model(dir.path()); }, {"malformed JSON", "model.safetensors.index.json"});
}

TEST(LoaderHf, MissingTensorNamesTensorAndFile) {
  TempDir dir;
  write_folder(dir.path(), tiny_config(), without(tiny_tensors(false, true), "model.layers.1.mlp.up_proj.weight"));
  expect_error([&] { load_model(dir.path()); },
               {"[load] tensor model.layers.1.mlp.up_proj.weight is missing from " + dir.path() + "/model.safetensors"});
  TempDir untied;
  write_folder(untied.path(), tiny_config(), tiny_tensors(false, false));
  expect_error([&] { load_model(untied.path()); }, {"lm_head.weight is missing"});
}

TEST(LoaderHf, WrongShapeAgainstConfig) {
  TempDir dir;
  std::mt19937 rng(kSeed);
  write_folder(dir.path(), tiny_config(),
               replaced(tiny_tensors(false, true), "model.layers.1.self_attn.k_proj.weight", random_tensor({32, 32}, rng)));
  expect_error([&] { load_model(dir.path()); },
               {"[load] tensor model.layers.1.self_attn.k_proj.weight in " + dir.path() +
                "/model.safetensors has shape (32, 32); expected (16, 32)"});
}

TEST(LoaderHf, IntegerWeightIsAnError) {
  TempDir dir;
  write_folder(dir.path(), tiny_config(),
               replaced(tiny_tensors(false, true), "model.norm.weight", Tensor::zeros({32}, DType::I32)));
  expect_error([&] { load_model(dir.path()); }, {"model.norm.weight", "dtype i32", "floating-point"});
}

TEST(LoaderHf, Qwen2BiasesLoad) {
  TempDir dir;
  const Named src = tiny_tensors(true, true);
  write_folder(dir.path(), tiny_config("qwen2"), src);
  const LlamaModelFile m = load_model(dir.path());
  EXPECT_EQ(m.config.model_type, "qwen2");
  EXPECT_TRUE(m.config.attention_bias);
  expect_bytes_equal(m.weights.layers[1].k_bias, by_name(src, "model.layers.1.self_attn.k_proj.bias"), "k_bias");
  // q/k rows are not permuted for HF files.
  expect_bytes_equal(m.weights.layers[0].q_proj, by_name(src, "model.layers.0.self_attn.q_proj.weight"), "q");
  TempDir nobias;
  write_folder(nobias.path(), tiny_config("qwen2"), tiny_tensors(false, true));
  expect_error([&] { load_model(nobias.path()); }, {"model.layers.0.self_attn.q_proj.bias is missing"});
}

TEST(Loader, BadPaths) {
  TempDir dir;
  expect_error([&] { load_model(dir.file("nope")); }, {"[load]", "nope", "does not exist"});
  expect_error([&] { load_model(dir.path()); }, {"[load]", dir.path(), "no config.json"});
  test::write_text(dir.file("config.json"), tiny_config().dump());
  expect_error([&] { load_model(dir.path()); }, {"neither model.safetensors nor"});
  test::write_text(dir.file("config.json"), "{");
  expect_error([&] { load_model(dir.path()); }, {"[config] malformed JSON", "config.json"});
  test::write_text(dir.file("m.txt"), "hello");
  expect_error([&] { load_model(dir.file("m.txt")); }, {"unrecognised model format", "m.txt"});
  test::write_text(dir.file("x.gguf"), "hello world");
  expect_error([&] { load_model(dir.file("x.gguf")); }, {"[gguf]", "x.gguf", "not a GGUF file"});
}

TEST(Loader, UnpermuteRopeRowsInvertsLlamaCppPermute) {
  // llama.cpp's permute: gguf row h*D + 2*i + j = hf row h*D + j*(D/2) + i. Apply it, undo it.
  const int64_t H = 3, D = 4, cols = 2;
  Tensor hf = Tensor::zeros({H * D, cols});
  for (int64_t i = 0; i < hf.numel(); ++i) hf.data<float>()[i] = float(i);
  Tensor file = Tensor::zeros({H * D, cols});
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < D / 2; ++i)
      for (int64_t j = 0; j < 2; ++j)
        for (int64_t c = 0; c < cols; ++c)
          file.data<float>()[(h * D + 2 * i + j) * cols + c] = hf.data<float>()[(h * D + j * (D / 2) + i) * cols + c];
  expect_bytes_equal(unpermute_rope_rows(file, H), hf, "matrix");
  // Head 0, D=4: file rows (0,1,2,3) hold hf rows (0,2,1,3).
  EXPECT_EQ(file.data<float>()[1 * cols], hf.data<float>()[2 * cols]);
  const Tensor bias = hf.reshape({H * D * cols}).slice_rows(0, H * D).clone();
  Tensor bias_file = Tensor::zeros({H * D});
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < D / 2; ++i)
      for (int64_t j = 0; j < 2; ++j) bias_file.data<float>()[h * D + 2 * i + j] = bias.data<float>()[h * D + j * (D / 2) + i];
  expect_bytes_equal(unpermute_rope_rows(bias_file, H), bias, "bias");
}

// --- GGUF -------------------------------------------------------------------------------------

// Random blocks of a quantized type for a (rows, cols) tensor; cols a multiple of 32.
std::vector<uint8_t> random_blocks(uint32_t type, int64_t rows, int64_t cols, std::mt19937& rng) {
  const GgmlTypeTraits tr = ggml_type_traits(type);
  const size_t blocks = size_t(rows * cols) / tr.block_elems;
  std::vector<uint8_t> out(blocks * tr.block_bytes);
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : out) b = uint8_t(byte(rng));
  for (size_t k = 0; k < blocks; ++k) {  // sane f16 scales (and Q4_1 mins) instead of random bits
    const uint16_t d = f32_to_f16(0.01f * float(1 + k % 7));
    std::memcpy(&out[k * tr.block_bytes], &d, 2);
    if (type == 3) {
      const uint16_t m = f32_to_f16(-0.05f * float(k % 3));
      std::memcpy(&out[k * tr.block_bytes + 2], &m, 2);
    }
  }
  return out;
}

Tensor dequantized(uint32_t type, const std::vector<uint8_t>& bytes, Shape shape) {
  Tensor t = Tensor::zeros(std::move(shape));
  dequantize_ggml(type, bytes.data(), t.data<float>(), size_t(t.numel()));
  return t;
}

std::vector<uint8_t> f32_bytes(const Tensor& t) {
  std::vector<uint8_t> b(t.nbytes());
  std::memcpy(b.data(), t.raw(), b.size());
  return b;
}

void add_llama_metadata(test::GgufBuilder& b, const std::string& arch) {
  b.kv_str("general.architecture", arch);
  b.kv_u32(arch + ".block_count", 2);
  b.kv_u32(arch + ".embedding_length", 32);
  b.kv_u32(arch + ".feed_forward_length", 64);
  b.kv_u32(arch + ".attention.head_count", 4);
  b.kv_u32(arch + ".attention.head_count_kv", 2);
  b.kv_f32(arch + ".attention.layer_norm_rms_epsilon", 1e-6f);
  b.kv_f32(arch + ".rope.freq_base", 500000.0f);
  b.kv_u32(arch + ".context_length", 4096);
  std::vector<std::string> tokens;
  for (int i = 0; i < 40; ++i) tokens.push_back("t" + std::to_string(i));
  b.kv_str_array("tokenizer.ggml.tokens", tokens);
  b.kv_u32("tokenizer.ggml.bos_token_id", 1);
  b.kv_u32("tokenizer.ggml.eos_token_id", 2);
}

TEST(LoaderGguf, QuantizedLlamaIsDequantizedAndPermuted) {
  std::mt19937 rng(kSeed);
  SCOPED_TRACE("seed " + std::to_string(kSeed));
  test::GgufBuilder b(3);
  add_llama_metadata(b, "llama");
  // Expected HF-order tensors, built as we add the file's.
  std::map<std::string, Tensor> expected;
  auto add_quant = [&](const std::string& gguf, const std::string& hf, uint32_t type, int64_t rows, int64_t cols,
                       int64_t rope_heads) {
    auto bytes = random_blocks(type, rows, cols, rng);
    Tensor t = dequantized(type, bytes, {rows, cols});
    expected[hf] = rope_heads ? unpermute_rope_rows(t, rope_heads) : t;
    b.tensor(gguf, {uint64_t(cols), uint64_t(rows)}, type, bytes);
  };
  auto add_norm = [&](const std::string& gguf, const std::string& hf) {
    Tensor t = random_tensor({32}, rng);
    expected[hf] = t;
    b.tensor(gguf, {32}, 0, f32_bytes(t));
  };
  add_quant("token_embd.weight", "model.embed_tokens.weight", 8, 40, 32, 0);
  for (int l = 0; l < 2; ++l) {
    const std::string g = "blk." + std::to_string(l) + ".", h = "model.layers." + std::to_string(l) + ".";
    add_norm(g + "attn_norm.weight", h + "input_layernorm.weight");
    add_quant(g + "attn_q.weight", h + "self_attn.q_proj.weight", 3, 32, 32, 4);
    add_quant(g + "attn_k.weight", h + "self_attn.k_proj.weight", 3, 16, 32, 2);
    add_quant(g + "attn_v.weight", h + "self_attn.v_proj.weight", 2, 16, 32, 0);
    add_quant(g + "attn_output.weight", h + "self_attn.o_proj.weight", 3, 32, 32, 0);
    add_norm(g + "ffn_norm.weight", h + "post_attention_layernorm.weight");
    add_quant(g + "ffn_gate.weight", h + "mlp.gate_proj.weight", 3, 64, 32, 0);
    add_quant(g + "ffn_up.weight", h + "mlp.up_proj.weight", 3, 64, 32, 0);
    add_quant(g + "ffn_down.weight", h + "mlp.down_proj.weight", 3, 32, 64, 0);
  }
  add_norm("output_norm.weight", "model.norm.weight");
  TempDir dir;
  const std::string path = dir.file("tiny.gguf");
  b.write(path);

  const LlamaModelFile m = load_model(path);
  EXPECT_EQ(m.format, "gguf");
  EXPECT_EQ(m.file_dtype, "Q4_1+Q8_0+Q4_0+F32");  // by element count: 17408, 1280, 1024, 160
  const LlamaConfig& c = m.config;
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.vocab_size, 40);  // from tokenizer.ggml.tokens
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.max_position_embeddings, 4096);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_TRUE(c.tie_word_embeddings);  // no output.weight
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(m.weights.lm_head.raw(), m.weights.embed_tokens.raw());
  for_each_weight(m, [&](const std::string& name, const Tensor& t) {
    if (name == "lm_head.weight") return;
    expect_bytes_equal(t, expected.at(name), name);
  });

  const LlamaModelFile h = load_model(path, {DType::BF16});
  expect_bytes_equal(h.weights.layers[1].k_proj, expected.at("model.layers.1.self_attn.k_proj.weight").to(DType::BF16), "bf16 k");
  expect_bytes_equal(h.weights.layers[1].post_attention_layernorm, expected.at("model.layers.1.post_attention_layernorm.weight"), "norm");
}

TEST(LoaderGguf, Qwen2IsNotPermutedAndHasBiases) {
  std::mt19937 rng(kSeed + 1);
  const Named src = tiny_tensors(true, true, kSeed + 1);
  test::GgufBuilder b(2);
  add_llama_metadata(b, "qwen2");
  const std::map<std::string, std::string> layer = {
      {"input_layernorm.weight", "attn_norm.weight"}, {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},   {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},       {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},       {"self_attn.o_proj.weight", "attn_output.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"}, {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},        {"mlp.down_proj.weight", "ffn_down.weight"}};
  for (const auto& [name, t] : src) {
    std::string g;
    if (name == "model.embed_tokens.weight") g = "token_embd.weight";
    else if (name == "model.norm.weight") g = "output_norm.weight";
    else if (name == "lm_head.weight") g = "output.weight";
    else g = "blk." + name.substr(13, 1) + "." + layer.at(name.substr(15));
    std::vector<uint64_t> dims(t.shape().rbegin(), t.shape().rend());
    // Matrices as F16, norms and biases F32 (as llama.cpp writes them).
    if (t.ndim() == 2) {
      const Tensor h = t.to(DType::F16);
      std::vector<uint8_t> bytes(h.nbytes());
      std::memcpy(bytes.data(), h.raw(), bytes.size());
      b.tensor(g, dims, 1, bytes);
    } else {
      b.tensor(g, dims, 0, f32_bytes(t));
    }
  }
  TempDir dir;
  const std::string path = dir.file("qwen.gguf");
  b.write(path);
  const LlamaModelFile m = load_model(path);
  EXPECT_EQ(m.config.model_type, "qwen2");
  EXPECT_EQ(m.config.architecture, "Qwen2ForCausalLM");
  EXPECT_TRUE(m.config.attention_bias);
  EXPECT_FALSE(m.config.tie_word_embeddings);
  EXPECT_EQ(m.file_dtype, "F16+F32");
  for_each_weight(m, [&](const std::string& name, const Tensor& t) {
    const Tensor want = by_name(src, name);
    expect_bytes_equal(t, want.ndim() == 2 ? want.to(DType::F16).to(DType::F32) : want, name);
  });
}

TEST(LoaderGguf, Errors) {
  TempDir dir;
  const std::string path = dir.file("e.gguf");
  {
    test::GgufBuilder b(3);
    add_llama_metadata(b, "llama");
    b.tensor_f32("token_embd.weight", {32, 40}, std::vector<float>(40 * 32));
    b.write(path);
    expect_error([&] { load_model(path); }, {"[load] tensor model.layers.0.input_layernorm.weight is missing from", path});
  }
  {
    test::GgufBuilder b(3);
    add_llama_metadata(b, "llama");
    b.tensor_f32("token_embd.weight", {32, 41}, std::vector<float>(41 * 32));
    b.write(path);
    expect_error([&] { load_model(path); },
                 {"[load] tensor token_embd.weight (model.embed_tokens.weight) in " + path +
                  " has shape (41, 32); expected (40, 32)"});
  }
  {
    test::GgufBuilder b(3);
    b.kv_str("general.architecture", "llama");
    b.write(path);
    expect_error([&] { load_model(path); }, {"[gguf]", path, "llama.block_count", "missing"});
  }
  const std::string gpt2 = test::shared_path("data/llama-cpp-vocab-tests/ggml-vocab-gpt-2.gguf");
  if (test::exists(gpt2))
    expect_error([&] { load_model(gpt2); },
                 {"[load] unsupported GGUF architecture gpt2 in " + gpt2 + "; supported: llama, qwen2"});
}

// stories260K (llama2.c) -> an HF folder (config.json from to_hf_json, safetensors) -> load_model.
TEST(LoaderHf, Stories260KThroughAnHfFolder) {
  const std::string bin = test::shared_path("models/stories260K/stories260K.bin");
  if (!test::exists(bin)) GTEST_SKIP() << bin << " not found";
  const LlamaModelFile a = load_model(bin);
  Named tensors;
  for_each_weight(a, [&](const std::string& name, const Tensor& t) {
    if (name != "lm_head.weight") tensors.push_back({name, t.to(DType::BF16)});
  });
  TempDir dir;
  test::write_text(dir.file("config.json"), a.config.to_hf_json().dump(2));
  write_safetensors(dir.file("model.safetensors"), tensors);
  const LlamaModelFile b = load_model(dir.path(), {DType::BF16});
  EXPECT_EQ(b.config.to_hf_json(), a.config.to_hf_json());
  EXPECT_EQ(b.config.parameter_count(), 260032);
  EXPECT_EQ(b.file_dtype, "bf16");
  for_each_weight(b, [&](const std::string& name, const Tensor& t) {
    if (name == "lm_head.weight") return;
    expect_bytes_equal(t, is_matrix(name) ? by_name(tensors, name) : by_name(tensors, name).to(DType::F32), name);
  });
}

TEST(LoaderGguf, SmolLM2Q4_1) {
  const std::string path = test::source_path("models/SmolLM2-135M-Instruct.Q4_1.gguf");
  if (!test::exists(path)) GTEST_SKIP() << path << " not found (scripts/fetch_models.sh)";
  const LlamaModelFile m = load_model(path);
  const LlamaConfig& c = m.config;
  EXPECT_EQ(c.num_hidden_layers, 30);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.num_attention_heads, 9);
  EXPECT_EQ(c.num_key_value_heads, 3);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope_theta, 100000.0);
  EXPECT_EQ(c.parameter_count(), 134515008);
  EXPECT_EQ(m.file_dtype, "Q4_1+Q8_0+F32");
  EXPECT_EQ(m.weights.lm_head.raw(), m.weights.embed_tokens.raw());
  EXPECT_EQ(m.weights.layers[29].down_proj.shape(), (Shape{576, 1536}));
  // Dequantized values are finite and of a plausible scale.
  const Tensor& q = m.weights.layers[0].q_proj;
  double sum_sq = 0;
  for (int64_t i = 0; i < q.numel(); ++i) {
    const float v = q.data<float>()[i];
    ASSERT_TRUE(std::isfinite(v));
    sum_sq += double(v) * v;
  }
  const double rms = std::sqrt(sum_sq / double(q.numel()));
  EXPECT_GT(rms, 1e-3);
  EXPECT_LT(rms, 10.0);
}

}  // namespace
}  // namespace qlora
