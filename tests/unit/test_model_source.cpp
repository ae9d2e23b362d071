// ModelSource (model/model_source.h): streaming a model in equals today's eager path. For an HF
// folder (single file, and re-sharded with an index), GGUF, llama2.c and a bitsandbytes 4-bit
// folder, a model built from the opened source and a model built from load_model() give the same
// logits and, after two training steps, the same parameters, bit for bit; bf16 sources keep their
// frozen weights bf16 (half the bytes) and still match; a bnb QLoRA base is taken as stored;
// release() drops the mapped pages; errors name the file and tensor.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "core/rng.h"
#include "io/ggml_dequant.h"
#include "io/gguf_writer.h"
#include "io/safetensors.h"
#include "io_test_util.h"
#include "model/loader.h"
#include "model/model_source.h"
#include "quant/bnb_format.h"
#include "train/trainer.h"
#include "train_test_util.h"

namespace qlora {
namespace {

namespace fs = std::filesystem;

std::string fixture(const std::string& name) { return test::source_path("tests/golden/fixtures/" + name); }

ModelOptions options(TrainMethod method, DType compute = DType::F32) {
  ModelOptions o;
  o.method = method;
  o.compute = compute;
  o.lora.r = 4, o.lora.lora_alpha = 8, o.lora.seed = 2, o.lora.lora_dropout = 0.1;
  return o;
}

// Params after two AdamW steps, and the logits of the trained model.
struct Outcome {
  std::vector<std::vector<uint8_t>> params;
  std::vector<float> logits;
};

Outcome train_two_steps(TrainModel& model) {
  TrainerConfig c;
  c.micro_batch = 2, c.lr = 1e-2, c.seed = 3;
  Trainer trainer(model, test::random_sequences(5, model.config().vocab_size, 4, 10), {}, c);
  trainer.step();
  trainer.step();
  Outcome o;
  for (const Param& p : model.parameters()) {
    const auto* b = static_cast<const uint8_t*>(p.value.raw());
    o.params.emplace_back(b, b + p.value.nbytes());
  }
  const Batch batch = make_batch(test::random_sequences(6, model.config().vocab_size, 1, 10), 0, 1);
  const Tensor logits = model.logits(batch);
  o.logits.assign(logits.data<float>(), logits.data<float>() + logits.numel());
  return o;
}

void expect_streaming_equals_eager(const std::string& path, TrainMethod method, DType compute = DType::F32) {
  SCOPED_TRACE(path + " " + train_method_name(method) + " " + std::string(dtype_name(compute)));
  LoadOptions load;
  load.weight_dtype = compute == DType::BF16 ? DType::BF16 : DType::F32;
  TrainModel eager(load_model(path, load), options(method, compute));
  TrainModel streamed(ModelSource::open(path), options(method, compute));
  const Outcome a = train_two_steps(eager), b = train_two_steps(streamed);
  EXPECT_EQ(a.logits, b.logits);
  ASSERT_EQ(a.params.size(), b.params.size());
  for (size_t i = 0; i < a.params.size(); ++i) EXPECT_EQ(a.params[i], b.params[i]) << "param " << i;
}

TEST(ModelSource, HfFolderStreamsLikeEagerLoad) {
  for (TrainMethod m : {TrainMethod::Lora, TrainMethod::Qlora, TrainMethod::Full})
    expect_streaming_equals_eager(fixture("qwen2"), m);
  expect_streaming_equals_eager(fixture("llama-tied"), TrainMethod::Qlora, DType::BF16);
}

// The same model cut into two shards with an index streams the same.
TEST(ModelSource, ShardedFolderStreamsLikeEagerLoad) {
  test::TempDir dir;
  const SafetensorsFile whole = SafetensorsFile::open(fixture("llama-gqa") + "/model.safetensors");
  std::vector<std::pair<std::string, Tensor>> shard[2];
  nlohmann::json map = nlohmann::json::object();
  int i = 0;
  for (const std::string& name : whole.names()) {
    const int s = i++ % 2;
    shard[s].emplace_back(name, whole.get(name));
    map[name] = "model-0000" + std::to_string(s + 1) + "-of-00002.safetensors";
  }
  for (int s = 0; s < 2; ++s)
    write_safetensors(dir.file("model-0000" + std::to_string(s + 1) + "-of-00002.safetensors"), shard[s]);
  std::ofstream(dir.file("model.safetensors.index.json")) << nlohmann::json{{"weight_map", map}}.dump();
  fs::copy_file(fixture("llama-gqa") + "/config.json", dir.file("config.json"));
  expect_streaming_equals_eager(dir.path(), TrainMethod::Qlora);
  expect_streaming_equals_eager(dir.path(), TrainMethod::Full);
  // An index naming a tensor twice (nlohmann would keep the last silently).
  const std::string index = dir.file("model.safetensors.index.json");
  const std::vector<uint8_t> raw_index = test::read_bytes(index);
  const std::string good_index(raw_index.begin(), raw_index.end());
  std::string twice = good_index;
  twice.insert(twice.find('{', twice.find("weight_map")) + 1,
               "\"model.norm.weight\": \"model-00001-of-00002.safetensors\", ");
  std::ofstream(index) << twice;
  test::expect_error([&] { ModelSource::open(dir.path()); }, {"model.safetensors.index.json", "model.norm.weight twice"});
  std::ofstream(index) << good_index;
  // A shard cut short: the tensor whose bytes run past the end is named with its file.
  const std::string shard2 = dir.file("model-00002-of-00002.safetensors");
  const std::vector<uint8_t> bytes = test::read_bytes(shard2);
  test::write_bytes(shard2, std::vector<uint8_t>(bytes.begin(), bytes.end() - 64));
  test::expect_error([&] { TrainModel(ModelSource::open(dir.path()), options(TrainMethod::Lora)); },
                     {"model-00002-of-00002.safetensors", "tensor model.layers.", "file truncated"});
  // A shard the index names but the folder lacks: named in the error.
  fs::remove(shard2);
  test::expect_error([&] { TrainModel(ModelSource::open(dir.path()), options(TrainMethod::Lora)); },
                     {"model-00002-of-00002.safetensors"});
}

TEST(ModelSource, GgufAndLlama2cStreamLikeEagerLoad) {
  const std::string gguf = test::shared_path("models/stories260K/tinyllamas-stories-260k-f32.gguf");
  const std::string bin = test::shared_path("models/stories260K/stories260K.bin");
  if (!test::exists(gguf) || !test::exists(bin)) GTEST_SKIP() << "../shared stories260K missing";
  for (const std::string& path : {gguf, bin}) {
    expect_streaming_equals_eager(path, TrainMethod::Qlora);
    expect_streaming_equals_eager(path, TrainMethod::Lora);
  }
  // The main job's real model (Q4_1 + Q8_0 GGUF), dequantized tensor by tensor.
  const std::string smol = test::source_path("models/SmolLM2-135M-Instruct.Q4_1.gguf");
  if (test::exists(smol)) {
    const ModelSource src = ModelSource::open(smol);
    EXPECT_EQ(src.stored_types(), "Q4_1+Q8_0+F32");
    const LlamaModelFile eager = load_model(smol);
    const std::string name = "model.layers.7.self_attn.k_proj.weight";  // q/k rows permuted back
    const Tensor a = src.load(name);
    const Tensor& b = *const_cast<LlamaWeights&>(eager.weights).find(name);
    ASSERT_EQ(a.nbytes(), b.nbytes());
    EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0);
  }
}

// A one-layer llama GGUF (hidden 256, so every k-quant fits a row) whose matrices are stored in
// the block types hub files hold, one type per matrix: Q2_K .. Q6_K, Q5_0, Q5_1, Q8_0. The blocks
// are random bytes with small f16 super-block scales: every other bit of a block is a free field,
// so these are valid blocks (test_gguf_dequant.cpp checks the kernels against gguf-py).
struct KQuantGguf {
  static constexpr int64_t kHidden = 256, kVocab = 64;
  // llama.cpp tensor name, shape (outermost first), GGML type.
  struct Entry {
    std::string name;
    Shape shape;
    GgmlType type;
  };
  static std::vector<Entry> entries() {
    const int64_t C = kHidden, kv = 128;  // 2 heads of 128, 1 kv head
    return {{"token_embd.weight", {kVocab, C}, GgmlType::Q8_0}, {"blk.0.attn_norm.weight", {C}, GgmlType::F32},
            {"blk.0.attn_q.weight", {C, C}, GgmlType::Q2_K},    {"blk.0.attn_k.weight", {kv, C}, GgmlType::Q3_K},
            {"blk.0.attn_v.weight", {kv, C}, GgmlType::Q4_K},   {"blk.0.attn_output.weight", {C, C}, GgmlType::Q5_K},
            {"blk.0.ffn_norm.weight", {C}, GgmlType::F32},      {"blk.0.ffn_gate.weight", {C, C}, GgmlType::Q6_K},
            {"blk.0.ffn_up.weight", {C, C}, GgmlType::Q5_0},    {"blk.0.ffn_down.weight", {C, C}, GgmlType::Q5_1},
            {"output_norm.weight", {C}, GgmlType::F32},         {"output.weight", {kVocab, C}, GgmlType::Q4_K}};
  }
  // Byte offsets of a block's f16 scales (ggml-common.h).
  static std::vector<size_t> scale_offsets(GgmlType t) {
    switch (t) {
      case GgmlType::Q2_K: return {80, 82};
      case GgmlType::Q3_K: return {108};
      case GgmlType::Q4_K:
      case GgmlType::Q5_K: return {0, 2};
      case GgmlType::Q6_K: return {208};
      case GgmlType::Q5_1: return {0, 2};
      default: return {0};  // Q5_0, Q8_0: d first
    }
  }
  static std::vector<uint8_t> random_blocks(Rng& rng, GgmlType type, int64_t n) {
    const GgmlTypeTraits traits = ggml_type_traits(uint32_t(type));
    const size_t blocks = size_t(n) / traits.block_elems;
    std::vector<uint8_t> bytes(blocks * traits.block_bytes);
    for (uint8_t& b : bytes) b = uint8_t(rng.next_u64());
    for (size_t b = 0; b < blocks; ++b)
      for (size_t off : scale_offsets(type)) {
        const uint16_t d = f32_to_f16(0.002f * (rng.uniform() + 0.1f));
        std::memcpy(&bytes[b * traits.block_bytes + off], &d, 2);
      }
    return bytes;
  }
  // Writes the model; `override_type` replaces the type of attn_q (for the error test).
  static void write(const std::string& path, uint32_t override_type = 0) {
    GgufWriter w;
    w.add_string("general.architecture", "llama");
    w.add_u32("llama.context_length", 64);
    w.add_u32("llama.embedding_length", uint32_t(kHidden));
    w.add_u32("llama.block_count", 1);
    w.add_u32("llama.feed_forward_length", uint32_t(kHidden));
    w.add_u32("llama.attention.head_count", 2);
    w.add_u32("llama.attention.head_count_kv", 1);
    w.add_u32("llama.rope.dimension_count", 128);
    w.add_u32("llama.vocab_size", uint32_t(kVocab));
    w.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
    Rng rng(11);
    for (const Entry& e : entries()) {
      if (e.type == GgmlType::F32) {
        Tensor norm = Tensor::zeros(e.shape);
        for (int64_t i = 0; i < norm.numel(); ++i) norm.data<float>()[i] = 1.0f + 0.1f * (rng.uniform() - 0.5f);
        w.add_tensor(e.name, norm, GgmlType::F32);
        continue;
      }
      uint32_t type = uint32_t(e.type);
      if (override_type && e.name == "blk.0.attn_q.weight") type = override_type;
      const GgmlTypeTraits traits = ggml_type_traits(type);
      std::vector<uint8_t> bytes = type == uint32_t(e.type) ? random_blocks(rng, e.type, shape_numel(e.shape))
                                   : std::vector<uint8_t>(size_t(shape_numel(e.shape)) / traits.block_elems * traits.block_bytes);
      w.add_encoded_tensor(e.name, e.shape, type, std::move(bytes));
    }
    w.write(path);
  }
};

TEST(ModelSource, KQuantGgufStreamsLikeEagerLoad) {
  test::TempDir dir;
  const std::string path = dir.file("kquant.gguf");
  KQuantGguf::write(path);
  const ModelSource src = ModelSource::open(path);
  EXPECT_EQ(src.config().hidden_size, KQuantGguf::kHidden);
  // Each stored type appears, and each tensor loads as the kernel dequantizes its bytes.
  const std::string types = src.stored_types();
  for (const char* t : {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q5_0", "Q5_1", "Q8_0"})
    EXPECT_NE(types.find(t), std::string::npos) << t << " not in " << types;
  const GgufFile file = GgufFile::open(path);
  const Tensor up = src.load("model.layers.0.mlp.up_proj.weight");
  const Tensor raw = file.load("blk.0.ffn_up.weight");
  ASSERT_EQ(up.nbytes(), raw.nbytes());
  EXPECT_EQ(std::memcmp(up.raw(), raw.raw(), up.nbytes()), 0);
  for (TrainMethod m : {TrainMethod::Qlora, TrainMethod::Lora, TrainMethod::Full})
    expect_streaming_equals_eager(path, m);
}

TEST(ModelSource, GgufTypeWeCannotDequantizeNamesFileAndTensor) {
  test::TempDir dir;
  const std::string path = dir.file("iq2.gguf");
  KQuantGguf::write(path, /*IQ2_XXS*/ 16);
  test::expect_error([&] { TrainModel(ModelSource::open(path), options(TrainMethod::Qlora)); },
                     {"iq2.gguf", "blk.0.attn_q.weight", "IQ2_XXS"});
}

// A bitsandbytes NF4 folder: QLoRA takes every 4-bit weight exactly as stored.
TEST(ModelSource, BnbFolderIsTakenAsStored) {
  const std::string dir = test::source_path("tests/quant/golden/tiny-llama-bnb-nf4");
  const ModelSource src = ModelSource::open(dir);
  TrainModel model(src, options(TrainMethod::Qlora));
  const SafetensorsFile file = SafetensorsFile::open(dir + "/model.safetensors");
  for (int64_t l = 0; l < model.config().num_hidden_layers; ++l)
    for (const Linear* lin : model.layer_linears(l)) {
      const BnbWeight stored = read_bnb_4bit(file, lin->name + ".weight");
      ASSERT_TRUE(lin->quantized()) << lin->name;
      const QuantTensor& q = *lin->qweight;
      EXPECT_EQ(q.block_size, stored.q.block_size);
      ASSERT_EQ(q.codes.nbytes(), stored.q.codes.nbytes());
      EXPECT_EQ(std::memcmp(q.codes.raw(), stored.q.codes.raw(), q.codes.nbytes()), 0) << lin->name;
      EXPECT_EQ(std::memcmp(q.absmax_codes.raw(), stored.q.absmax_codes.raw(), q.absmax_codes.nbytes()), 0);
    }
  // LoRA over the same folder dequantizes, and equals the eager load.
  expect_streaming_equals_eager(dir, TrainMethod::Lora);
}

// bf16 on disk, f32 compute: the frozen base stays bf16 (half the bytes of today's widened f32
// base) and gives today's numbers.
TEST(ModelSource, Bf16SourceKeepsItsWidth) {
  const std::string path = fixture("llama-bf16");
  TrainModel streamed(ModelSource::open(path), options(TrainMethod::Lora));
  TrainModel eager(load_model(path), options(TrainMethod::Lora));
  EXPECT_EQ(streamed.layer_linears(0)[kProjQ]->weight.dtype(), DType::BF16);
  EXPECT_EQ(eager.layer_linears(0)[kProjQ]->weight.dtype(), DType::F32);
  EXPECT_LT(streamed.memory().weights, eager.memory().weights * 6 / 10);
  const Outcome a = train_two_steps(eager), b = train_two_steps(streamed);
  EXPECT_EQ(a.logits, b.logits);
  for (size_t i = 0; i < a.params.size(); ++i) EXPECT_EQ(a.params[i], b.params[i]) << "param " << i;
}

// Building a model releases every tensor it reads, frozen ones included: a dequantized or
// converted tensor may be the kept one itself (same storage), and a viewed one faults its pages
// back from the file when read, so neither is a reason to keep the source's pages.
TEST(ModelSource, BuildingReleasesEveryTensorItReads) {
  for (const std::string& path : {fixture("qwen2"), fixture("llama-bf16")}) {
    for (TrainMethod method : {TrainMethod::Lora, TrainMethod::Qlora, TrainMethod::Full}) {
      SCOPED_TRACE(path + " " + train_method_name(method));
      const ModelSource base = ModelSource::open(path);
      auto loads = std::make_shared<std::map<std::string, int>>(), releases = std::make_shared<std::map<std::string, int>>();
      const TensorLookup counting = [base, loads, releases](const std::string& name) -> std::optional<SourceTensor> {
        const std::vector<std::string> names = base.tensor_names();
        if (std::find(names.begin(), names.end(), name) == names.end()) return std::nullopt;
        SourceTensor t;
        t.shape = base.expected_shape(name);
        t.file = base.path(), t.name_in_file = name, t.stored_type = base.stored_type(name);
        t.load = [base, loads, name] { ++(*loads)[name]; return base.load(name); };
        t.release = [base, releases, name] { ++(*releases)[name]; base.release(name); };
        return t;
      };
      TrainModel model(ModelSource(base.config(), base.path(), base.format(), "counting source", counting),
                       options(method));
      EXPECT_FALSE(loads->empty());
      for (const auto& [name, n] : *loads) EXPECT_GE((*releases)[name], 1) << name << " read but never released";
    }
  }
}

TEST(ModelSource, NamesShapesAndErrors) {
  const ModelSource src = ModelSource::open(fixture("qwen2"));
  const std::vector<std::string> names = src.tensor_names();
  EXPECT_EQ(names.front(), "model.embed_tokens.weight");
  EXPECT_EQ(names[2], "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(names[3], "model.layers.0.self_attn.q_proj.bias");  // qwen2 has q/k/v biases
  EXPECT_EQ(names.back(), "lm_head.weight");
  EXPECT_EQ(src.expected_shape("model.layers.1.mlp.down_proj.weight"), (Shape{32, 64}));
  test::expect_error([&] { src.load("model.layers.9.mlp.up_proj.weight"); }, {"model.layers.9.mlp.up_proj.weight"});
  // A tensor with the wrong shape names the file and the tensor.
  test::TempDir dir;
  fs::copy_file(fixture("qwen2") + "/config.json", dir.file("config.json"));
  const SafetensorsFile whole = SafetensorsFile::open(fixture("qwen2") + "/model.safetensors");
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& name : whole.names())
    tensors.emplace_back(name, name == "model.norm.weight" ? Tensor::zeros({31}) : whole.get(name));
  write_safetensors(dir.file("model.safetensors"), tensors);
  test::expect_error([&] { ModelSource::open(dir.path()).load("model.norm.weight"); },
                     {"model.norm.weight", "has shape (31)", "expected (32)"});
  // release() of a mapped tensor keeps it readable (the pages come back from the file).
  const ModelSource ok = ModelSource::open(fixture("qwen2"));
  const Tensor before = ok.load("model.embed_tokens.weight").clone();
  ok.release("model.embed_tokens.weight");
  const Tensor after = ok.load("model.embed_tokens.weight");
  EXPECT_EQ(std::memcmp(before.raw(), after.raw(), before.nbytes()), 0);
}

}  // namespace
}  // namespace qlora
