// TrainModel properties that need no reference framework: the training forward equals the
// inference forward (itself proven against transformers), evaluation equals the training loss,
// f32 gradients agree with f64 ones, gradient checkpointing changes memory but not gradients,
// micro-batches accumulate to the full batch, QLoRA keeps no dense base, bf16 stays close to f32.
#include <gtest/gtest.h>

#include <cstdlib>

#include <cmath>

#include "core/error.h"
#include "model/llama.h"
#include "train_test_util.h"

namespace qlora {
namespace {

TrainModelOptions lora_options(TrainMethod method, DType compute = DType::F32, int64_t checkpoint_every = 0) {
  TrainModelOptions o;
  o.method = method;
  o.compute = compute;
  o.checkpoint_every = checkpoint_every;
  o.lora.r = 4;
  o.lora.lora_alpha = 8;
  o.lora.seed = 1;
  return o;
}

std::vector<Tensor> gradients(TrainModel& model, const Batch& batch, double scale, uint64_t seed = 3) {
  model.zero_grad();
  model.forward_backward(batch, scale, seed);
  std::vector<Tensor> out;
  for (const Param& p : model.parameters()) out.push_back(p.grad.to(DType::F64));
  return out;
}

double max_rel_diff(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    double scale = 0;
    for (int64_t j = 0; j < a[i].numel(); ++j) scale = std::max(scale, std::abs(a[i].data<double>()[j]));
    for (int64_t j = 0; j < a[i].numel(); ++j)
      worst = std::max(worst, std::abs(a[i].data<double>()[j] - b[i].data<double>()[j]) / std::max(scale, 1e-30));
  }
  return worst;
}

TEST(TrainModel, LogitsEqualInferenceForward) {
  // One unpacked sequence: the training path must give the inference path's logits (same kernels
  // family, different code); inference logits match transformers to 1e-5 in tests/golden.
  for (const char* fixture : {"llama-gqa", "qwen2", "mistral-swa"}) {
    SCOPED_TRACE(fixture);
    LlamaModel reference(test::load_fixture(fixture));
    TrainModel model(test::load_fixture(fixture), lora_options(TrainMethod::Lora));
    Rng rng(4);
    std::vector<TrainSequence> seqs = {test::random_sequence(rng, model.config().vocab_size, 16, 16, 1)};
    const Batch batch = make_batch(seqs, 0, 1);
    const Tensor ours = model.logits(batch);
    const Tensor expected = reference.forward_sequence(seqs[0].ids);
    ASSERT_EQ(ours.numel(), expected.numel());
    double worst = 0;
    for (int64_t i = 0; i < ours.numel(); ++i)
      worst = std::max(worst, double(std::abs(ours.data<float>()[i] - expected.data<float>()[i])));
    EXPECT_LE(worst, 1e-5);  // f32 summation-order differences only (B = 0 adds exactly nothing)
  }
}

TEST(TrainModel, EvaluateEqualsTrainingLoss) {
  TrainModel model(test::load_fixture("llama-gqa"), lora_options(TrainMethod::Lora));
  test::randomize_lora_b(model, 2, 0.1);
  const Batch batch = make_batch(test::random_sequences(8, model.config().vocab_size, 3, 16), 0, 3);
  const LossSum eval = model.evaluate(batch);
  model.zero_grad();
  const LossSum train = model.forward_backward(batch, 1.0, 0);
  EXPECT_EQ(eval.tokens, train.tokens);
  EXPECT_EQ(eval.tokens, batch.target_count());
  EXPECT_NEAR(eval.loss, train.loss, 1e-9 * std::abs(train.loss));  // identical kernels, no dropout
}

TEST(TrainModel, FloatGradientsMatchDouble) {
  for (TrainMethod method : {TrainMethod::Full, TrainMethod::Lora, TrainMethod::Qlora}) {
    SCOPED_TRACE(train_method_name(method));
    TrainModel f32(test::load_fixture("qwen2"), lora_options(method, DType::F32));
    TrainModel f64(test::load_fixture("qwen2"), lora_options(method, DType::F64));
    if (method != TrainMethod::Full) test::randomize_lora_b(f32, 2, 0.1), test::randomize_lora_b(f64, 2, 0.1);
    const Batch batch = make_batch(test::random_sequences(8, f32.config().vocab_size, 2, 16), 0, 2);
    // f32 rounding through 2 blocks and the loss: ~1e-6 relative per op; 1e-4 of the largest
    // gradient of each tensor leaves room for cancellation in small elements.
    EXPECT_LE(max_rel_diff(gradients(f32, batch, 0.05), gradients(f64, batch, 0.05)), 1e-4);
  }
}

TEST(TrainModel, CheckpointingGivesIdenticalGradientsAndLessMemory) {
  for (TrainMethod method : {TrainMethod::Full, TrainMethod::Qlora}) {
    SCOPED_TRACE(train_method_name(method));
    TrainModel plain(test::load_fixture("llama-gqa"), lora_options(method));
    TrainModel every(test::load_fixture("llama-gqa"), lora_options(method, DType::F32, 1));
    TrainModel other(test::load_fixture("llama-gqa"), lora_options(method, DType::F32, 2));
    const Batch batch = make_batch(test::random_sequences(5, plain.config().vocab_size, 2, 16), 0, 2);
    const auto g_plain = gradients(plain, batch, 0.1);
    // Recomputation runs the same kernels on the same inputs with the same dropout seeds.
    EXPECT_EQ(max_rel_diff(g_plain, gradients(every, batch, 0.1)), 0.0);
    EXPECT_EQ(max_rel_diff(g_plain, gradients(other, batch, 0.1)), 0.0);
    EXPECT_LT(every.memory().activations_saved_peak, other.memory().activations_saved_peak);
    EXPECT_LT(other.memory().activations_saved_peak, plain.memory().activations_saved_peak);
  }
}

// Per-token MoE dispatch (bench/moe_vs_dense.sh's baseline) computes what the grouped one does:
// the same rows through the same experts, one GEMM per row instead of one per expert, so only
// the summation order of the weight gradients (rows accumulated one by one) differs. Full
// fine-tuning (expert weight gradients) and QLoRA on attention and the router (frozen 4-bit
// experts); expert LoRA is refused.
TEST(TrainModel, PerTokenMoeDispatchMatchesGrouped) {
  for (TrainMethod method : {TrainMethod::Full, TrainMethod::Qlora}) {
    SCOPED_TRACE(train_method_name(method));
    TrainModelOptions o = lora_options(method);
    o.lora.target_modules = {"q_proj", "v_proj", "gate"};
    TrainModel grouped(test::load_fixture("mixtral"), o);
    o.moe_dispatch = MoeDispatch::PerToken;
    TrainModel per_token(test::load_fixture("mixtral"), o);
    if (method != TrainMethod::Full) test::randomize_lora_b(grouped, 2, 0.1), test::randomize_lora_b(per_token, 2, 0.1);
    const Batch batch = make_batch(test::random_sequences(6, grouped.config().vocab_size, 2, 16), 0, 2);
    EXPECT_NEAR(grouped.evaluate(batch).loss, per_token.evaluate(batch).loss, 1e-5 * std::abs(grouped.evaluate(batch).loss));
    EXPECT_LE(max_rel_diff(gradients(grouped, batch, 0.05), gradients(per_token, batch, 0.05)), 1e-5);
  }
  TrainModelOptions o = lora_options(TrainMethod::Lora);
  o.lora.target_modules = {"q_proj", "w1"};
  o.moe_dispatch = MoeDispatch::PerToken;
  EXPECT_THROW(TrainModel(test::load_fixture("mixtral"), o), Error);
}

TEST(TrainModel, MicroBatchesAccumulateToTheFullBatch) {
  TrainModel model(test::load_fixture("llama-gqa"), lora_options(TrainMethod::Lora));
  test::randomize_lora_b(model, 2, 0.1);
  const auto seqs = test::random_sequences(21, model.config().vocab_size, 4, 16);
  const Batch full = make_batch(seqs, 0, 4);
  const double scale = 1.0 / double(full.target_count());
  const auto g_full = gradients(model, full, scale);
  model.zero_grad();
  for (size_t i = 0; i < 4; ++i) model.forward_backward(make_batch(seqs, i, 1), scale, 3);
  std::vector<Tensor> g_accum;
  for (const Param& p : model.parameters()) g_accum.push_back(p.grad.to(DType::F64));
  // Only the f32 summation order differs (4 partial sums instead of one GEMM over 4x the rows).
  EXPECT_LE(max_rel_diff(g_full, g_accum), 1e-5);
}

TEST(TrainModel, QloraKeepsOnlyTheFourBitBase) {
  TrainModel qlora(test::load_fixture("llama-gqa"), lora_options(TrainMethod::Qlora));
  TrainModel lora(test::load_fixture("llama-gqa"), lora_options(TrainMethod::Lora));
  for (const Linear* lin : qlora.layer_linears(0)) {
    EXPECT_TRUE(lin->quantized());
    EXPECT_FALSE(lin->weight.defined()) << lin->name << " kept a dense copy";
  }
  const LlamaConfig& c = qlora.config();
  const int64_t linear_params = c.num_hidden_layers * (c.hidden_size * (c.q_dim() + 2 * c.kv_dim()) +
                                                       c.q_dim() * c.hidden_size + 3 * c.hidden_size * c.intermediate_size);
  // 32 bits/param dense vs ~4.127 (NF4 + double-quantized constants) for the linears.
  const double saved = double(lora.memory().weights - qlora.memory().weights);
  EXPECT_NEAR(saved / double(linear_params), (32.0 - 4.127) / 8.0, 0.1);
}

TEST(TrainModel, Bf16ComputeStaysCloseToF32) {
  TrainModel f32(test::load_fixture("llama-gqa"), lora_options(TrainMethod::Lora));
  TrainModel bf16(test::load_fixture("llama-gqa"), lora_options(TrainMethod::Lora, DType::BF16));
  const Batch batch = make_batch(test::random_sequences(6, f32.config().vocab_size, 2, 16), 0, 2);
  const double a = f32.evaluate(batch).mean(), b = bf16.evaluate(batch).mean();
  EXPECT_NEAR(a, b, 2e-2 * a);  // bf16 keeps 8 bits of mantissa: ~0.4% per rounding, a few roundings deep
  EXPECT_NE(a, b);              // and it really rounds
}

// Trainable params and grads are views of one allocation each, in registration order, without
// overlap: a fused optimizer step or an all-reduce can take the flat buffers whole.
TEST(TrainModel, ParamsLiveInFlatBuffers) {
  for (TrainMethod method : {TrainMethod::Lora, TrainMethod::Full}) {
    SCOPED_TRACE(train_method_name(method));
    TrainModel model(test::load_fixture("llama-gqa"), lora_options(method));
    const Tensor& values = model.model().flat_parameters();
    const Tensor& grads = model.model().flat_gradients();
    ASSERT_TRUE(values.defined() && grads.defined());
    size_t end = 0;
    for (const Param& p : model.parameters()) {
      EXPECT_EQ(p.value.storage(), values.storage()) << p.name;
      EXPECT_EQ(p.grad.storage(), grads.storage()) << p.name;
      EXPECT_EQ(p.value.offset(), p.grad.offset()) << p.name;
      EXPECT_GE(p.value.offset(), end) << p.name << " overlaps the previous param";
      end = p.value.offset() + p.value.nbytes();
    }
    EXPECT_LE(end, values.nbytes());
    // Writing a param through the flat buffer changes the layer's weight: the same memory.
    const Param first = model.parameters()[0];
    first.value.data<float>()[0] = 42.0f;
    EXPECT_EQ(values.data<float>()[first.value.offset() / sizeof(float)], 42.0f);
    // zero_grad clears the whole buffer.
    const Batch batch = make_batch(test::random_sequences(3, model.config().vocab_size, 2, 12), 0, 2);
    model.forward_backward(batch, 1.0, 1);
    model.zero_grad();
    for (int64_t i = 0; i < grads.numel(); ++i) ASSERT_EQ(grads.data<float>()[i], 0.0f) << i;
  }
}

// The gradients-ready hook fires once per block with params, in backward order (head, last block
// ... first block, embedding), and when it fires that block's gradients are final for the batch:
// what a bucketed all-reduce overlapped with the backward needs.
TEST(TrainModel, GradientsReadyHookGivesFinalBlockGradients) {
  for (TrainMethod method : {TrainMethod::Lora, TrainMethod::Full}) {
    for (int64_t checkpoint_every : {0, 1}) {
      SCOPED_TRACE(train_method_name(method) + " checkpoint_every " + std::to_string(checkpoint_every));
      TrainModel model(test::load_fixture("llama-gqa"), lora_options(method, DType::F32, checkpoint_every));
      if (method == TrainMethod::Lora) test::randomize_lora_b(model, 5, 0.1);
      const int64_t L = model.config().num_hidden_layers;
      const Tensor& grads = model.model().flat_gradients();
      std::vector<GradientsReady> calls;
      std::vector<std::vector<float>> snapshots;
      model.model().set_gradients_ready_hook([&](const GradientsReady& r) {
        calls.push_back(r);
        const float* g = grads.data<float>() + r.offset / sizeof(float);
        snapshots.emplace_back(g, g + r.bytes / sizeof(float));
      });
      const Batch batch = make_batch(test::random_sequences(4, model.config().vocab_size, 2, 12), 0, 2);
      model.zero_grad();
      model.forward_backward(batch, 0.5, 2);
      // Blocks in backward order; full fine-tuning also has the head (L) and the embedding (-1).
      std::vector<int64_t> expect;
      if (method == TrainMethod::Full) expect.push_back(L);
      for (int64_t l = L - 1; l >= 0; --l) expect.push_back(l);
      if (method == TrainMethod::Full) expect.push_back(-1);
      ASSERT_EQ(calls.size(), expect.size());
      size_t params = 0, bytes = 0;
      for (size_t i = 0; i < calls.size(); ++i) {
        EXPECT_EQ(calls[i].block, expect[i]);
        params += calls[i].param_count, bytes += calls[i].bytes;
        // Final: nothing later in the backward changed these gradients.
        const float* now = grads.data<float>() + calls[i].offset / sizeof(float);
        EXPECT_EQ(snapshots[i], std::vector<float>(now, now + calls[i].bytes / sizeof(float))) << "block " << calls[i].block;
      }
      EXPECT_EQ(params, model.parameters().size());  // every param in exactly one call
      EXPECT_EQ(bytes, grads.nbytes());              // and every byte of the flat buffer
    }
  }
}

TEST(TrainModel, BadOptionsThrow) {
  TrainModelOptions o = lora_options(TrainMethod::Lora);
  o.lora.target_modules = {"q_proj", "attn"};
  EXPECT_THROW(TrainModel(test::load_fixture("llama-gqa"), o), Error);
  o = lora_options(TrainMethod::Lora, DType::F16);
  EXPECT_THROW(TrainModel(test::load_fixture("llama-gqa"), o), Error);
  EXPECT_THROW(train_method_from_name("prefix"), Error);
}

// QLORA_CPU_ISA forces each bf16 product path (AMX, AVX512-BF16, the f32 fallback) on a whole
// model, LoRA and QLoRA: the paths compute the same exact products and differ only in f32
// summation order, which can flip an activation's bf16 rounding by one step (2^-8) here and there;
// the mean loss then moves by far less than 0.2%, while a wrong product moves it by O(1).
TEST(TrainModel, Bf16ProductsAgreeOnEveryIsa) {
  for (TrainMethod method : {TrainMethod::Lora, TrainMethod::Qlora}) {
    std::vector<double> losses;
    for (const char* isa : {"avx2", "avx512bf16", "amx"}) {
      setenv("QLORA_CPU_ISA", isa, 1);
      TrainModel model(test::load_fixture("llama-gqa"), lora_options(method, DType::BF16));
      const Batch batch = make_batch(test::random_sequences(6, model.config().vocab_size, 2, 16), 0, 2);
      losses.push_back(model.evaluate(batch).mean());
      unsetenv("QLORA_CPU_ISA");
    }
    for (size_t i = 1; i < losses.size(); ++i) EXPECT_NEAR(losses[i], losses[0], 2e-3 * losses[0]) << i;
  }
}

}  // namespace
}  // namespace qlora
