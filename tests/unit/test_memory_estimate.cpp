// Tests of the memory estimator (train/memory_estimate.h):
//  - the worked examples of the source documents (/work/shared/seeds), reproduced to the byte by the
//    textbook arithmetic: 7B full fp32 = 28 + 28 + 56 = 112 GB, 13B = 52 + 52 + 104 = 208 GB,
//    10B with fp16 weights/grads and fp32 Adam = 160 GB, int8 7B = 7 + 7 + 14 = 28 GB, the 5x5
//    double-quantization example (100 -> 34 bytes), QLoRA's 0.127 bits/param of constants;
//  - preset parameter counts against the published model sizes;
//  - the real-run categories against what TrainModel::memory() and Optimizer::state_bytes() report
//    after a training step on tiny committed models, for every method, with and without
//    checkpointing, f32 and bf16, adamw and adamw8bit;
//  - bad input raising an error that names the option.
#include <gtest/gtest.h>

#include "core/error.h"
#include "optim/optimizer.h"
#include "model/model_source.h"
#include "train/memory_estimate.h"
#include "train_test_util.h"

namespace qlora {
namespace {

constexpr double kGB = 1e9;  // the documents' GB: 7e9 params x 4 bytes = "28 GB"

EstimateOptions textbook_full(const std::string& precision) {
  EstimateOptions o;
  o.method = "full";
  o.precision = precision;
  o.textbook = true;
  return o;
}

// Seed 002 ("Demystifying LLMs", Jair Neto): 7B x 4 bytes = 28 GB weights, 28 GB gradients, 7B x 4 x 2
// = 56 GB Adam states; "28 + 28 + 56 = 112 GB". Seed 000 gives the same 28 GB / equal grads / 2x optimizer.
TEST(MemoryEstimateTextbook, Llama7bFullFp32Is112GB) {
  const MemoryEstimate m = estimate_memory_textbook(7'000'000'000, textbook_full("fp32"));
  EXPECT_EQ(m.weights, size_t(28 * kGB));
  EXPECT_EQ(m.gradients, size_t(28 * kGB));
  EXPECT_EQ(m.optimizer, size_t(56 * kGB));
  EXPECT_EQ(m.activations, 0u);
  EXPECT_EQ(m.overhead, 0u);
  EXPECT_EQ(m.total, size_t(112 * kGB));
  // Seed 000: "who will provide me with the missing 96GB VRAM?" (112 GB needed, a 16 GB card).
  EXPECT_EQ(m.total - size_t(16 * kGB), size_t(96 * kGB));
  // Seed 002: switching to 16-bit halves it, "from 112 gigabytes to 56 gigabytes" (every term in 16 bits).
  EXPECT_EQ(m.total / 2, size_t(56 * kGB));
}

// Seed 001: 13B x 4 bytes = 52 GB parameters, 52 GB gradients, 104 GB optimizer (2 copies), ~208 GB.
TEST(MemoryEstimateTextbook, Llama13bFullFp32Is208GB) {
  const MemoryEstimate m = estimate_memory_textbook(13'000'000'000, textbook_full("fp32"));
  EXPECT_EQ(m.weights, size_t(52 * kGB));
  EXPECT_EQ(m.gradients, size_t(52 * kGB));
  EXPECT_EQ(m.optimizer, size_t(104 * kGB));
  EXPECT_EQ(m.total, size_t(208 * kGB));
}

// Seed 003 (Protopapas, lecture 9): full fine-tuning of 10B with an FP16 base model and FP32 optimizer
// state: "10B -> 160GB" = 2 + 2 + 12 (fp32 master, m, v) bytes per parameter.
TEST(MemoryEstimateTextbook, TenBillionFp16WithFp32AdamIs160GB) {
  for (const char* precision : {"fp16", "bf16"}) {
    SCOPED_TRACE(precision);
    const MemoryEstimate m = estimate_memory_textbook(parse_parameter_count("10B"), textbook_full(precision));
    EXPECT_EQ(m.weights, size_t(20 * kGB));
    EXPECT_EQ(m.gradients, size_t(20 * kGB));
    EXPECT_EQ(m.optimizer, size_t(120 * kGB));
    EXPECT_EQ(m.total, size_t(160 * kGB));
  }
}

// Seed 002: int8 "7 * 1 + 7 * 1 + 7 * 2 * 1 = 28GB"; seed 000: int8 weights + gradients = 14 GB.
TEST(MemoryEstimateTextbook, Int8Llama7bIs28GB) {
  const MemoryEstimate m = estimate_memory_textbook(7'000'000'000, textbook_full("int8"));
  EXPECT_EQ(m.weights, size_t(7 * kGB));
  EXPECT_EQ(m.gradients, size_t(7 * kGB));
  EXPECT_EQ(m.weights + m.gradients, size_t(14 * kGB));
  EXPECT_EQ(m.optimizer, size_t(14 * kGB));
  EXPECT_EQ(m.total, size_t(28 * kGB));
}

// The presets' full textbook figures use the size in their name (what the tutorials multiply).
TEST(MemoryEstimateTextbook, PresetNominalSizes) {
  EXPECT_EQ(preset_nominal_parameters("llama-7b"), 7'000'000'000);
  EXPECT_EQ(preset_nominal_parameters("llama-13b"), 13'000'000'000);
  const MemoryEstimate m =
      estimate_memory_textbook(preset_nominal_parameters("llama-13b"), textbook_full("fp32"));
  EXPECT_EQ(m.total, size_t(208 * kGB));
}

// Seed 003: double quantization of a 5x5 fp32 matrix (100 bytes) in blocks of 5: 25 int8 values +
// 5 int8 constants c1 + one fp32 constant c2 = "25 + 5 + 4 = 34 bytes".
TEST(MemoryEstimateTextbook, DoubleQuantizationWorkedExample) {
  const QuantBytes q = quantized_bytes(25, 8, 5, /*double_quant=*/true, /*nested_block=*/256, /*offset=*/false);
  EXPECT_EQ(q.codes, 25u);
  EXPECT_EQ(q.constants, 5u + 4u);
  EXPECT_EQ(q.codes + q.constants, 34u);
  EXPECT_EQ(25u * 4u, 100u);
}

// QLoRA (Dettmers et al. 2023, section 3): block 64 constants cost 32/64 = 0.5 bits per parameter;
// double quantization brings them to 8/64 + 32/(64*256) = 0.127 bits.
TEST(MemoryEstimateTextbook, QloraConstantBitsPerParameter) {
  const int64_t n = int64_t(64) * 256 * 1024;  // whole nested blocks
  const QuantBytes single = quantized_bytes(n, 4, 64, false);
  const QuantBytes dq = quantized_bytes(n, 4, 64, true, 256, /*offset=*/false);
  EXPECT_DOUBLE_EQ(8.0 * double(single.constants) / double(n), 0.5);
  EXPECT_NEAR(8.0 * double(dq.constants) / double(n), 0.127, 5e-4);
  EXPECT_EQ(dq.codes, size_t(n / 2));
}

// Published sizes: Llama 2 7B / 13B, Mistral 7B, Llama 3 8B, Mixtral 8x7B (46.7B, all experts).
TEST(MemoryEstimatePresets, ParameterCounts) {
  EXPECT_EQ(count_parameters(preset_config("llama-7b")), 6'738'415'616);
  EXPECT_EQ(count_parameters(preset_config("llama-13b")), 13'015'864'320);
  EXPECT_EQ(count_parameters(preset_config("mistral-7b")), 7'241'732'096);
  EXPECT_EQ(count_parameters(preset_config("llama3-8b")), 8'030'261'248);
  EXPECT_EQ(count_parameters(preset_config("mixtral-8x7b"), preset_experts("mixtral-8x7b")), 46'702'792'704);
  // Qwen/Qwen3-8B: 8.2B, of which 6.95B outside the (untied) embedding and head, as its card states.
  EXPECT_EQ(count_parameters(preset_config("qwen3-8b")), 8'190'735'360);
  EXPECT_EQ(count_parameters(preset_config("qwen3-8b")) - 2 * 151936 * 4096, 6'946'075'648);
  EXPECT_EQ(count_parameters(preset_config("qwen3-8b")), preset_config("qwen3-8b").parameter_count());
  // Qwen/Qwen3-30B-A3B: 30.5B in all (128 experts and their routers), as its card states.
  EXPECT_EQ(count_parameters(preset_config("qwen3-30b-a3b"), preset_experts("qwen3-30b-a3b")), 30'532'122'624);
  EXPECT_EQ(preset_experts_per_token("qwen3-30b-a3b"), 8);
  // Without experts the config's own count agrees.
  EXPECT_EQ(count_parameters(preset_config("llama-7b")), preset_config("llama-7b").parameter_count());
  EXPECT_THROW(preset_config("gpt-5"), Error);
}

TEST(MemoryEstimatePresets, QloraSevenBFitsSixteenGB) {
  // Seed 000/002: QLoRA makes a 7B model trainable on a 16 GB GPU; the base is ~3.5 GB in NF4.
  EstimateOptions o;
  o.method = "qlora";
  o.seq = 512;
  const MemoryEstimate m = estimate_memory(preset_config("llama-7b"), o);
  EXPECT_LT(m.weights + m.quant_constants + m.adapters + m.gradients + m.optimizer + m.activations,
            size_t(16 * kGB));
  // 6.48e9 projection values at 4 bits = 3.24 GB, plus the embedding and LM head kept in bf16 (the
  // hub's bf16 checkpoint, the default source) and the norms in f32.
  const size_t dense = size_t(2) * 32000 * 4096 * 2 + size_t(65) * 4096 * 4;
  EXPECT_NEAR(double(m.weights - dense) / kGB, 3.24, 0.01);
  EXPECT_LT(m.training_sum(), size_t(16 * kGB));
  // The load streams: the built model plus the largest projection's transient (its bf16 pages and
  // the f32 copy the quantizer reads, 6 bytes x 4096 x 11008), so training sets the peak.
  const size_t built = m.weights + m.quant_constants + m.adapters + m.gradients;
  EXPECT_EQ(m.load_peak, built + size_t(6) * 4096 * 11008);
  EXPECT_EQ(m.total, m.training_sum());
  // An f32 source keeps the embedding and head in f32 (the frozen tensors' own width).
  o.source_dtype = "f32";
  EXPECT_EQ(estimate_memory(preset_config("llama-7b"), o).weights, m.weights + size_t(2) * 32000 * 4096 * 2);
  o.source_dtype = "bf16";
  // Full fp32 of the same model (exact count) is far above.
  o.method = "full";
  EXPECT_GT(estimate_memory(preset_config("llama-7b"), o).training_sum(), size_t(107 * kGB));
}

TEST(MemoryEstimateErrors, BadInputNamesTheOption) {
  const LlamaConfig c = preset_config("llama-7b");
  auto expect_error = [&](EstimateOptions o, const std::string& needle) {
    try {
      estimate_memory(c, o);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  EstimateOptions o;
  o.method = "prefix";
  expect_error(o, "--method");
  o = {};
  o.source_dtype = "int3";
  expect_error(o, "source dtype");
  o = {};
  o.precision = "fp8";
  expect_error(o, "--precision");
  o = {};
  o.optimizer = "sgd";
  expect_error(o, "--optimizer");
  o = {};
  o.seq = 0;
  expect_error(o, "--seq");
  o = {};
  o.batch = -1;
  expect_error(o, "--batch");
  o = {};
  o.method = "full", o.precision = "nf4";
  expect_error(o, "--precision");
  EXPECT_THROW(parse_parameter_count("seven"), Error);
  EXPECT_EQ(parse_parameter_count("1.5b"), 1'500'000'000);
  EXPECT_EQ(parse_parameter_count("135M"), 135'000'000);
}

// ---------------------------------------------------------------------------------------------
// Against the engine: one real step, then compare categories.

struct EngineCase {
  std::string fixture, method, compute, optimizer;
  bool checkpointing;
  int64_t B, T;
  std::string source = "f32";  // bf16: the fixture's matrices stored in bf16, as the hub ships them
};

// Weights, gradients, adapters and optimizer state are enumerated tensor by tensor, so they must
// match to the byte, except that TrainModel counts a full-bf16 norm vector twice (as weight and
// as master) where the estimate counts it once: allow that many bytes.
void check_against_engine(const EngineCase& k) {
  SCOPED_TRACE(::testing::Message() << k.fixture << " " << k.method << " " << k.compute << " " << k.optimizer
                                    << (k.checkpointing ? " ckpt" : "") << " B=" << k.B << " T=" << k.T);
  LlamaModelFile file = test::load_fixture(k.fixture);
  const LlamaConfig config = file.config;
  if (k.source == "bf16") {
    const ModelSource names = ModelSource::from_file(file);
    for (const std::string& name : names.tensor_names()) {
      Tensor* t = file.weights.find(name);
      if (t->ndim() == 2) *t = t->to(DType::BF16);
    }
    if (config.tie_word_embeddings) file.weights.lm_head = file.weights.embed_tokens;
  }
  TrainModelOptions to;
  to.method = train_method_from_name(k.method);
  to.compute = dtype_from_name(k.compute);
  to.checkpoint_every = k.checkpointing ? 1 : 0;
  TrainModel model(std::move(file), to);
  auto optimizer = make_optimizer(optimizer_kind_from_name(k.optimizer), AdamWConfig{}, make_heap_state_store());

  const uint64_t seed = 1234;
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const auto sequences = test::random_sequences(seed, config.vocab_size, int(k.B), int(k.T));
  const Batch batch = make_batch(sequences, 0, size_t(k.B));
  model.zero_grad();
  model.forward_backward(batch, 1.0 / double(std::max<int64_t>(1, batch.target_count())), 1);
  optimizer->step(model.parameters(), 1e-4);

  EstimateOptions o;
  o.method = k.method;
  o.compute = k.compute;
  o.optimizer = k.optimizer;
  o.checkpointing = k.checkpointing;
  o.batch = k.B, o.seq = k.T;
  o.lora_r = to.lora.r;
  o.source_dtype = k.source;
  const MemoryEstimate m = estimate_memory(config, o);
  const MemoryStats s = model.memory();

  const size_t norm_vectors = (size_t(2 * config.num_hidden_layers + 1) * size_t(config.hidden_size) +
                               (config.qk_norm ? size_t(2 * config.num_hidden_layers * config.head_dim) : 0)) *
                              4;
  if (k.method == "full") {
    const size_t engine = s.weights + s.trainable;
    const size_t slack = k.compute == "bf16" ? norm_vectors : 0;
    EXPECT_LE(m.weights, engine);
    EXPECT_GE(m.weights + slack, engine);
    EXPECT_EQ(m.adapters, 0u);
    EXPECT_EQ(m.trainable_parameters, count_parameters(config));
  } else {
    // TrainWeights sums a 4-bit tensor as size_t(numel * bits_per_param / 8) in double, which may
    // truncate one byte below the exact count: allow a byte per projection.
    const double rounding = k.method == "qlora" ? double(7 * config.num_hidden_layers) : 0.0;
    EXPECT_NEAR(double(m.weights + m.quant_constants), double(s.weights), rounding);
    EXPECT_EQ(m.adapters, s.trainable);
  }
  EXPECT_EQ(m.gradients, s.gradients);
  EXPECT_EQ(m.optimizer, optimizer->state_bytes());
  EXPECT_EQ(m.activations_engine, s.activations_peak);
  // The resident figure differs from the engine's accounting only by the loss-chunk buffers and
  // the scratch output: same order of magnitude.
  EXPECT_GT(m.activations, m.activations_engine / 2);
  EXPECT_LT(m.activations, m.activations_engine * 2);
  EXPECT_EQ(m.parameters, config.parameter_count());
}

TEST(MemoryEstimateEngine, MatchesTrainModelCategories) {
  const std::vector<EngineCase> cases = {
      {"llama-gqa", "qlora", "f32", "adamw", false, 2, 16},
      {"llama-gqa", "qlora", "f32", "adamw", true, 2, 16},
      {"llama-gqa", "lora", "f32", "adamw8bit", false, 1, 24},
      {"llama-gqa", "lora", "bf16", "adamw", true, 1, 24},
      {"llama-gqa", "full", "f32", "adamw", false, 2, 8},
      {"llama-gqa", "full", "bf16", "adamw8bit", true, 1, 12},
      {"llama-tied", "full", "f32", "adamw", true, 1, 16},
      {"llama-tied", "qlora", "f32", "adamw", false, 3, 8},
      {"qwen2", "lora", "f32", "adamw", false, 2, 8},
      {"qwen2", "full", "f32", "adamw8bit", false, 1, 8},
      {"qwen3", "lora", "f32", "adamw", false, 2, 8},  // q/k before the head norms kept too
      {"qwen3", "full", "bf16", "adamw", true, 1, 12},
      // A bf16 source keeps its frozen matrices in bf16 with f32 compute.
      {"llama-gqa", "lora", "f32", "adamw", false, 2, 16, "bf16"},
      {"llama-tied", "qlora", "f32", "adamw", true, 1, 16, "bf16"},
  };
  for (const EngineCase& k : cases) check_against_engine(k);
}

// stories260K (llama2.c, 512 x 64 embedding) exercises the 8-bit state path (tensors >= 4096 values).
TEST(MemoryEstimateEngine, Stories260kFullAdamW8bit) {
  const std::string path = test::shared_path("models/stories260K/stories260K.bin");
  if (!test::exists(path)) GTEST_SKIP() << "no " << path;
  LlamaModelFile file = load_model(path);
  const LlamaConfig config = file.config;
  TrainModelOptions to;
  to.method = TrainMethod::Full;
  TrainModel model(std::move(file), to);
  auto optimizer = make_optimizer(OptimizerKind::AdamW8bit, AdamWConfig{}, make_heap_state_store());
  const auto sequences = test::random_sequences(7, config.vocab_size, 2, 32);
  const Batch batch = make_batch(sequences, 0, 2);
  model.forward_backward(batch, 1.0 / double(std::max<int64_t>(1, batch.target_count())), 1);
  optimizer->step(model.parameters(), 1e-4);
  EstimateOptions o;
  o.method = "full", o.optimizer = "adamw8bit", o.batch = 2, o.seq = 32;
  const MemoryEstimate m = estimate_memory(config, o);
  EXPECT_EQ(m.optimizer, optimizer->state_bytes());
  EXPECT_EQ(m.activations_engine, model.memory().activations_peak);
  EXPECT_EQ(m.gradients, model.memory().gradients);
  EXPECT_LT(m.optimizer, 8 * size_t(count_parameters(config)));  // some tensors really are 8-bit
}

}  // namespace
}  // namespace qlora
