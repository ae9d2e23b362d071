// Training parity with transformers + PEFT (goldens from tests/parity/golden/make_train_goldens.py,
// torch 2.15 / transformers 5.23 / peft 0.21.2 / bitsandbytes 0.50.2, f32 on CPU) on the tiny
// llama-gqa and qwen2 fixtures, batch (2, 24) with prompt masks and right padding:
//  - LoRA, rsLoRA, QLoRA (NF4 + double quant) and full fine-tuning: loss and every gradient;
//  - the adapted model's logits;
//  - our NF4 base equals bitsandbytes' dequantized weights exactly;
//  - 10 Trainer steps (AdamW, weight decay, clipping) reproduce PEFT's loss and grad-norm curve and
//    final adapters, for LoRA and QLoRA.
// Tolerances come from the goldens' own f32-vs-f64 spread (README there): single-pass losses and
// gradients differ from f64 by ≤ 2e-6 relative, so 2e-5 relative to each tensor's largest value
// leaves room for our different summation order; curves drift to ~1e-5, so 1e-4; final adapters
// by up to 4.5e-4 absolute (AdamW amplifies gradients near eps), so 1.5e-3 absolute.
#include <gtest/gtest.h>

#include <cmath>

#include "io/safetensors.h"
#include "quant/nf4.h"
#include "train/trainer.h"
#include "train_test_util.h"

namespace qlora {
namespace {

constexpr double kGradRelTol = 2e-5;
constexpr double kLogitTol = 2e-5;
constexpr double kCurveTol = 1e-4;
constexpr double kFinalAbsTol = 1.5e-3;
constexpr int64_t kTargets = 28;  // non-ignored shifted labels of the golden batch

struct Golden {
  SafetensorsFile file;
  explicit Golden(const std::string& model, const std::string& name)
      : file(SafetensorsFile::open(test::source_path("tests/parity/golden/" + model + "/" + name + ".safetensors"))) {}
  Tensor get(const std::string& name) const { return file.get(name); }
  double scalar(const std::string& name) const { return double(file.get(name).data<float>()[0]); }

  // The golden batch as training sequences: segment -1 where attention_mask is 0.
  std::vector<TrainSequence> sequences() const {
    const Tensor ids = get("input_ids"), labels = get("labels"), mask = get("attention_mask");
    std::vector<TrainSequence> out;
    for (int64_t b = 0; b < ids.dim(0); ++b) {
      TrainSequence s;
      s.n_examples = 1;
      for (int64_t t = 0; t < ids.dim(1); ++t) {
        const int64_t i = b * ids.dim(1) + t;
        s.ids.push_back(int32_t(ids.data<int64_t>()[i]));
        s.labels.push_back(int32_t(labels.data<int64_t>()[i]));
        s.position_ids.push_back(int32_t(t));
        s.segment_ids.push_back(mask.data<int64_t>()[i] ? 0 : -1);
      }
      out.push_back(std::move(s));
    }
    return out;
  }
};

TrainModelOptions golden_options(TrainMethod method, bool rslora = false) {
  TrainModelOptions o;
  o.method = method;
  o.lora.r = 4;
  o.lora.lora_alpha = 8;
  o.lora.use_rslora = rslora;
  return o;
}

// Copies every param present in the golden (PEFT names) into the model.
void load_params(TrainModel& model, const Golden& g, const std::string& suffix = "") {
  for (Param& p : model.parameters()) {
    const Tensor v = g.get(p.name + suffix);
    ASSERT_EQ(v.numel(), p.value.numel()) << p.name;
    std::memcpy(p.value.raw(), v.raw(), v.nbytes());
  }
  model.parameters_updated();
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, double(std::abs(t.data<float>()[i])));
  return m;
}

// max |a - b| / max |b| over a tensor.
double rel_error(const Tensor& ours, const Tensor& expected) {
  double d = 0;
  for (int64_t i = 0; i < ours.numel(); ++i)
    d = std::max(d, double(std::abs(ours.data<float>()[i] - expected.data<float>()[i])));
  return d / std::max(max_abs(expected), 1e-30);
}

void check_grads(const std::string& model_name, const std::string& case_name, TrainMethod method, bool rslora) {
  SCOPED_TRACE(model_name + "/" + case_name);
  const Golden g(model_name, case_name);
  TrainModel model(test::load_fixture(model_name), golden_options(method, rslora));
  if (method != TrainMethod::Full) load_params(model, g);
  const std::vector<TrainSequence> seqs = g.sequences();
  const Batch batch = make_batch(seqs, 0, seqs.size());
  ASSERT_EQ(batch.target_count(), kTargets);
  model.zero_grad();
  const LossSum loss = model.forward_backward(batch, 1.0 / kTargets, 0);
  EXPECT_NEAR(loss.mean(), g.scalar("loss"), kGradRelTol * g.scalar("loss"));
  double worst = 0;
  for (const Param& p : model.parameters()) {
    const double err = rel_error(p.grad, g.get(p.name + ".grad"));
    worst = std::max(worst, err);
    EXPECT_LE(err, kGradRelTol) << p.name;
  }
  std::printf("[parity] %s %s: loss %.7f vs %.7f, worst gradient error %.2e (of the tensor's max)\n",
              model_name.c_str(), case_name.c_str(), loss.mean(), g.scalar("loss"), worst);

  if (!g.file.contains("logits")) return;
  const Tensor ours = model.logits(batch), expected = g.get("logits"), mask = g.get("attention_mask");
  const int64_t V = model.config().vocab_size;
  double logit_err = 0;
  for (int64_t r = 0; r < batch.rows(); ++r) {
    if (!mask.data<int64_t>()[r]) continue;  // HF's padded query rows attend differently; no target there
    for (int64_t v = 0; v < V; ++v)
      logit_err = std::max(logit_err, double(std::abs(ours.data<float>()[r * V + v] - expected.data<float>()[r * V + v])));
  }
  EXPECT_LE(logit_err, kLogitTol);
}

class TrainParity : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainParity, LoraGradients) { check_grads(GetParam(), "lora_grads", TrainMethod::Lora, false); }
TEST_P(TrainParity, RsLoraGradients) { check_grads(GetParam(), "lora_rslora_grads", TrainMethod::Lora, true); }
TEST_P(TrainParity, FullFineTuningGradients) { check_grads(GetParam(), "full_grads", TrainMethod::Full, false); }
TEST_P(TrainParity, QloraGradients) { check_grads(GetParam(), "qlora_grads", TrainMethod::Qlora, false); }

TEST_P(TrainParity, Nf4BaseEqualsBitsandbytes) {
  const Golden g(GetParam(), "qlora_grads");
  TrainModel model(test::load_fixture(GetParam()), golden_options(TrainMethod::Qlora));
  for (int64_t l = 0; l < model.config().num_hidden_layers; ++l) {
    for (const Linear* lin : model.layer_linears(l)) {
      const Tensor ours = dequantize_4bit(*lin->qweight), expected = g.get(lin->name + ".weight.nf4_dequant");
      ASSERT_EQ(ours.numel(), expected.numel());
      EXPECT_EQ(std::memcmp(ours.raw(), expected.raw(), ours.nbytes()), 0) << lin->name;  // byte-exact
    }
  }
}

void check_curve(const std::string& model_name, const std::string& case_name, TrainMethod method) {
  SCOPED_TRACE(model_name + "/" + case_name);
  const Golden g(model_name, case_name);
  TrainModel model(test::load_fixture(model_name), golden_options(method));
  load_params(model, g);
  TrainerConfig config;
  config.micro_batch = 2;
  config.max_steps = 10;
  config.lr = 5e-3;
  config.adamw.weight_decay = 0.01;
  config.max_grad_norm = 1.0;
  config.shuffle = false;
  Trainer trainer(model, g.sequences(), {}, config);
  const Tensor losses = g.get("losses"), norms = g.get("grad_norms");
  for (int64_t s = 0; s < 10; ++s) {
    const StepResult r = trainer.step();
    EXPECT_NEAR(r.loss, losses.data<float>()[s], kCurveTol * losses.data<float>()[s]) << "step " << s + 1;
    EXPECT_NEAR(r.grad_norm, norms.data<float>()[s], kCurveTol * norms.data<float>()[s]) << "step " << s + 1;
    if (s == 9)
      std::printf("[parity] %s %s: step 10 loss %.6f vs %.6f, grad norm %.6f vs %.6f\n", model_name.c_str(),
                  case_name.c_str(), r.loss, losses.data<float>()[s], r.grad_norm, norms.data<float>()[s]);
  }
  double worst = 0;
  for (const Param& p : model.parameters()) {
    const Tensor expected = g.get(p.name + ".final");
    for (int64_t i = 0; i < p.value.numel(); ++i)
      worst = std::max(worst, double(std::abs(p.value.data<float>()[i] - expected.data<float>()[i])));
  }
  EXPECT_LE(worst, kFinalAbsTol);
  std::printf("[parity] %s %s: final adapters max abs difference %.2e\n", model_name.c_str(), case_name.c_str(), worst);
}

TEST_P(TrainParity, LoraTenStepCurve) { check_curve(GetParam(), "lora_curve", TrainMethod::Lora); }
TEST_P(TrainParity, QloraTenStepCurve) { check_curve(GetParam(), "qlora_curve", TrainMethod::Qlora); }

INSTANTIATE_TEST_SUITE_P(Fixtures, TrainParity, ::testing::Values("llama-gqa", "qwen2"),
                         [](const auto& info) { return info.param == "llama-gqa" ? "llama_gqa" : "qwen2"; });

}  // namespace
}  // namespace qlora
