// Finite-difference gradient checks of the whole model in double precision (compute f64): the
// summed loss of a packed, padded micro-batch through every block, for full fine-tuning (every
// parameter, embeddings and norms included), LoRA (with dropout, non-zero B) and QLoRA (NF4 base),
// with and without gradient checkpointing, on GQA (llama-gqa), biases (qwen2), a sliding window
// (mistral-swa), Qwen3's per-head q/k norms (qwen3: their weights are parameters in full
// fine-tuning; LoRA's gradients flow back through them), Mixtral's experts, router and
// load-balancing loss (mixtral) and Qwen3-MoE's mixed dense/sparse layers (qwen3-moe) fixtures.
#include <gtest/gtest.h>

#include <cmath>

#include "train_test_util.h"

namespace qlora {
namespace {

// Central differences in f64 with step 1e-6: truncation error ~1e-13·|f'''|, rounding error
// ~1e-16·|L| / 1e-6 ≈ 1e-8 absolute for these summed losses (|L| ≈ 100). So an element fails when
// |numeric - analytic| > 1e-5·(|numeric| + |analytic|) + 1e-7 (ten times the rounding noise); a
// wrong term in any backward is orders of magnitude above that (measured worst: 1.5e-5 relative on
// an element whose gradient is ~1e-4, i.e. the rounding noise; 2e-6 to 9e-6 elsewhere).
constexpr double kStep = 1e-6;
constexpr double kRelTol = 1e-5;
constexpr double kAbsTol = 1e-7;
constexpr int kSamplesPerParam = 24;

struct Case {
  std::string fixture;
  TrainMethod method;
  int64_t checkpoint_every;
  double dropout;
  std::vector<std::string> targets = all_projection_names();
};

void check_model_gradients(const Case& c) {
  SCOPED_TRACE(c.fixture + " " + train_method_name(c.method) + " checkpoint_every=" +
               std::to_string(c.checkpoint_every));
  TrainModelOptions options;
  options.method = c.method;
  options.compute = DType::F64;
  options.checkpoint_every = c.checkpoint_every;
  options.lora.r = 2;
  options.lora.lora_alpha = 4;
  options.lora.lora_dropout = c.dropout;
  options.lora.seed = 7;
  options.lora.target_modules = c.targets;
  TrainModel model(test::load_fixture(c.fixture), options);
  if (c.method != TrainMethod::Full) test::randomize_lora_b(model, 11, 0.2);
  const int64_t vocab = model.config().vocab_size;
  const Batch batch = make_batch(test::random_sequences(3, vocab, 2, 12), 0, 2);
  const uint64_t seed = 5;

  model.zero_grad();
  const LossSum base = model.forward_backward(batch, 1.0, seed);
  ASSERT_GT(base.tokens, 0);
  std::vector<Param> params = model.parameters();
  std::vector<Tensor> grads;
  for (const Param& p : params) grads.push_back(p.grad.clone());

  // The differentiated total: the summed cross-entropy, plus for MoE models the load-balancing loss
  // weighted as forward_backward weights it (coefficient x this micro-batch's share of the targets,
  // here all of them at grad_scale 1).
  auto loss_at = [&]() {
    model.parameters_updated();
    model.zero_grad();
    const LossSum r = model.forward_backward(batch, 1.0, seed);
    return r.loss + r.aux_term;
  };
  Rng rng(99);
  double worst = 0;
  int checked = 0;
  for (size_t pi = 0; pi < params.size(); ++pi) {
    const Param& p = params[pi];
    for (int s = 0; s < kSamplesPerParam; ++s) {
      const int64_t i = int64_t(rng.next_u64() % uint64_t(p.value.numel()));
      const double original = test::element(p.value, i);
      test::set_element(p.value, i, original + kStep);
      const double up = loss_at();
      test::set_element(p.value, i, original - kStep);
      const double down = loss_at();
      test::set_element(p.value, i, original);
      const double numeric = (up - down) / (2 * kStep);
      const double analytic = test::element(grads[pi], i);
      const double diff = std::abs(numeric - analytic), size = std::abs(numeric) + std::abs(analytic);
      if (size > 1e-4) worst = std::max(worst, diff / size);
      ++checked;
      EXPECT_LE(diff, kRelTol * size + kAbsTol) << p.name << "[" << i << "] analytic " << analytic << " numeric "
                                                << numeric;
    }
  }
  std::printf("[grad] %s %s ckpt=%lld: %d elements, worst relative error %.2e (elements with |g| > 1e-4)\n", c.fixture.c_str(),
              train_method_name(c.method).c_str(), (long long)c.checkpoint_every, checked, worst);
}

TEST(ModelGrads, FullFineTuningGqa) { check_model_gradients({"llama-gqa", TrainMethod::Full, 0, 0.0}); }
TEST(ModelGrads, FullFineTuningTiedWithCheckpointing) { check_model_gradients({"llama-tied", TrainMethod::Full, 1, 0.0}); }
TEST(ModelGrads, LoraWithDropout) { check_model_gradients({"llama-gqa", TrainMethod::Lora, 0, 0.2}); }
TEST(ModelGrads, LoraBiasesCheckpointEveryOther) { check_model_gradients({"qwen2", TrainMethod::Lora, 2, 0.1}); }
TEST(ModelGrads, LoraSlidingWindow) { check_model_gradients({"mistral-swa", TrainMethod::Lora, 0, 0.0}); }
TEST(ModelGrads, QloraNf4Base) { check_model_gradients({"llama-gqa", TrainMethod::Qlora, 1, 0.0}); }
TEST(ModelGrads, FullFineTuningQwen3HeadNormsWithCheckpointing) {
  check_model_gradients({"qwen3", TrainMethod::Full, 2, 0.0});
}
TEST(ModelGrads, LoraQwen3HeadNorms) { check_model_gradients({"qwen3", TrainMethod::Lora, 0, 0.1}); }
TEST(ModelGrads, QloraQwen3) { check_model_gradients({"qwen3", TrainMethod::Qlora, 0, 0.0}); }
// Mixtral: router, experts and the load-balancing loss (full, with checkpointing: the routing is
// recomputed); LoRA on attention over frozen experts.
TEST(ModelGrads, FullFineTuningMixtralRouterExpertsAux) { check_model_gradients({"mixtral", TrainMethod::Full, 2, 0.0}); }
TEST(ModelGrads, LoraMixtralAttention) { check_model_gradients({"mixtral", TrainMethod::Lora, 0, 0.1}); }
// LoRA on the router and every expert part (PEFT's names w1, w3, w2, gate), with dropout and
// checkpointing: the adapters' gradients through grouped rows and through the routing.
TEST(ModelGrads, LoraMixtralExpertsAndRouter) {
  check_model_gradients({"mixtral", TrainMethod::Lora, 1, 0.1, {"q_proj", "gate", "w1", "w2", "w3"}});
}
// Qwen3-MoE: gate_proj/up_proj/down_proj select the experts and the dense layer's MLP, as in PEFT.
TEST(ModelGrads, QloraQwen3MoeExperts) {
  check_model_gradients({"qwen3-moe", TrainMethod::Qlora, 0, 0.0, {"v_proj", "gate_proj", "up_proj", "down_proj"}});
}
// Qwen3-MoE: head norms, sparse layers around a dense one (mlp_only_layers), weights that are the
// raw top-k probabilities (norm_topk_prob off), aux loss on; full with checkpointing, and QLoRA.
TEST(ModelGrads, FullFineTuningQwen3MoeMixedLayers) { check_model_gradients({"qwen3-moe", TrainMethod::Full, 1, 0.0}); }
TEST(ModelGrads, QloraQwen3Moe) { check_model_gradients({"qwen3-moe", TrainMethod::Qlora, 0, 0.0}); }

}  // namespace
}  // namespace qlora
