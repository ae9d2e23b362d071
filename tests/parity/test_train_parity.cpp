// Training parity with transformers + PEFT (goldens from tests/parity/golden/make_train_goldens.py,
// torch 2.15 / transformers 5.23 (5.25 for qwen3, llama-headdim, the MoE fixtures) / peft 0.21.2 /
// bitsandbytes 0.50.2, f32 on CPU) on the tiny llama-gqa, qwen2, qwen3 (per-head q/k norms),
// llama-headdim (head_dim 16 != C/H), mixtral and qwen3-moe (experts, router and load-balancing
// loss; LoRA on the nn.Linear projections, QLoRA's NF4 base covering the experts) fixtures, batch
// (2, 24) with prompt masks and right padding:
//  - LoRA, rsLoRA, QLoRA (NF4 + double quant) and full fine-tuning: loss and every gradient;
//  - the adapted model's logits;
//  - our NF4 base equals bitsandbytes' dequantized weights exactly;
//  - 10 Trainer steps (AdamW, weight decay, clipping) reproduce PEFT's loss and grad-norm curve and
//    final adapters, for LoRA and QLoRA;
//  - bf16 compute against the same in bf16 (LoRA: gradients, logits, the 10-step curve).
// Tolerances come from the goldens' own f32-vs-f64 spread (README there): single-pass losses and
// gradients differ from f64 by ≤ 2e-6 relative, so 2e-5 relative to each tensor's largest value
// leaves room for our different summation order; curves drift to ~1e-5, so 1e-4; final adapters
// by up to 4.5e-4 absolute (AdamW amplifies gradients near eps), so 1.5e-3 absolute.
#include <gtest/gtest.h>

#include <algorithm>
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
constexpr int64_t kTargets = 28;
  // non-ignored shifted labels of the golden batch

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

TrainModelOptions golden_options(TrainMethod method, bool rslora = false, DType compute = DType::F32,
                                 const std::string& fixture = "") {
  TrainModelOptions o;
  // The qwen3-moe goldens adapt attention only (make_train_goldens.py).
  if (fixture == "qwen3-moe") o.lora.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj"};
  o.method = method;
  o.compute = compute;
  o.lora.r = 4;
  o.lora.lora_alpha = 8;
  o.lora.use_rslora = rslora;
  // The goldens' NF4 base is bitsandbytes' on CPU: its codes where a value sits on a boundary (one
  // absmax of llama-headdim lies 6e-7 from the midpoint of two 8-bit codes; CUDA takes the other).
  o.quantize.rounding = BnbRounding::Cpu;
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

// The tolerances of one comparison: loss relative to the loss, gradients relative to each tensor's
// largest value, logits absolute.
struct Tolerances {
  double loss = kGradRelTol, grad = kGradRelTol, logits = kLogitTol;
};
// bf16 compute against transformers + PEFT in bf16 (base in bfloat16, adapters f32). The two round
// to bf16 at slightly different points (torch rounds every activation gradient and the attention
// scores and probabilities; we keep those in f32 and round the products' operands), so they differ
// by the order of bf16 noise itself, which the goldens measure as torch's own bf16-vs-f32 spread
// (README there): 2.4e-4 / 5e-5 / 1.0e-3 / 5.7e-4 of the loss (llama-gqa / qwen2 / qwen3 /
// llama-headdim: the head_dim-16 fixtures are noisier), 5-7e-2 of a gradient tensor's max, 0.05-0.11
// on the logits. The loss must sit within twice that fixture's spread of torch's bf16 loss
// (measured: 0.27, 0.19, 0.68 and 1.49 of it), gradients and logits within about twice the
// largest spread (measured here: up to 8.4e-2 and 0.12).
// What makes the comparison sharp is the size of the rounding: the RMS over every logit of our bf16
// minus torch's f32 must be 0.5 to 1.5 times torch's own bf16 minus f32 (measured 0.67-0.79: we
// round at fewer points), which an f32 path (0) or a path rounding more coarsely fails. An earlier
// criterion, our loss nearer torch's bf16 loss than torch's f32 loss is, held on the head_dim-8
// fixtures only (0.27, 0.19 of that distance; 0.68 and 1.49 with head_dim 16).
constexpr double kBf16Grad = 0.15, kBf16Logits = 0.25, kBf16SpreadFactor = 2.0;
constexpr double kBf16NoiseMin = 0.5, kBf16NoiseMax = 1.5;
// The 10-step bf16 curve: losses within 2e-3 relative or twice torch's own largest bf16-vs-f32
// difference over the curve, whichever is larger (measured 9e-4 on llama-gqa, whose torch spread
// is 8e-4; 2.8e-3 on qwen3, whose spread is 1.8e-3), grad norms within 2.5% (measured 0.9%). The
// final adapters are not compared: AdamW's near-sign updates let two correct bf16 runs differ by
// up to 2·lr·steps = 0.1 per element (measured 0.08), so any bound that holds would say nothing.
constexpr double kBf16CurveLossTol = 2e-3, kBf16CurveNormTol = 2.5e-2;

// transformers' loss: the mean cross-entropy, plus an MoE model's weighted load-balancing loss.
double objective(const LossSum& s) { return (s.loss + s.aux_term) / double(s.tokens); }

void check_grads(const std::string& model_name, const std::string& case_name, TrainMethod method, bool rslora,
                 DType compute = DType::F32, Tolerances tol = {}) {
  SCOPED_TRACE(model_name + "/" + case_name);
  const Golden g(model_name, case_name);
  TrainModel model(test::load_fixture(model_name), golden_options(method, rslora, compute, model_name));
  if (method != TrainMethod::Full) load_params(model, g);
  const std::vector<TrainSequence> seqs = g.sequences();
  const Batch batch = make_batch(seqs, 0, seqs.size());
  ASSERT_EQ(batch.target_count(), kTargets);
  model.zero_grad();
  const LossSum loss = model.forward_backward(batch, 1.0 / kTargets, 0);
  EXPECT_NEAR(objective(loss), g.scalar("loss"), tol.loss * g.scalar("loss"));
  double worst = 0;
  for (const Param& p : model.parameters()) {
    const double err = rel_error(p.grad, g.get(p.name + ".grad"));
    worst = std::max(worst, err);
    EXPECT_LE(err, tol.grad) << p.name;
  }
  std::printf("[parity] %s %s: loss %.7f vs %.7f, worst gradient error %.2e (of the tensor's max)\n",
              model_name.c_str(), case_name.c_str(), objective(loss), g.scalar("loss"), worst);

  if (!g.file.contains("logits")) return;
  const Tensor ours = model.logits(batch), expected = g.get("logits"), mask = g.get("attention_mask");
  const int64_t V = model.config().vocab_size;
  double logit_err = 0;
  for (int64_t r = 0; r < batch.rows(); ++r) {
    if (!mask.data<int64_t>()[r]) continue;  // HF's padded query rows attend differently; no target there
    for (int64_t v = 0; v < V; ++v)
      logit_err = std::max(logit_err, double(std::abs(ours.data<float>()[r * V + v] - expected.data<float>()[r * V + v])));
  }
  EXPECT_LE(logit_err, tol.logits);
  std::printf("[parity] %s %s: logits max abs difference %.2e\n", model_name.c_str(), case_name.c_str(), logit_err);
}

class TrainParity : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainParity, LoraGradients) { check_grads(GetParam(), "lora_grads", TrainMethod::Lora, false); }
TEST_P(TrainParity, RsLoraGradients) { check_grads(GetParam(), "lora_rslora_grads", TrainMethod::Lora, true); }
TEST_P(TrainParity, FullFineTuningGradients) { check_grads(GetParam(), "full_grads", TrainMethod::Full, false); }
TEST_P(TrainParity, QloraGradients) { check_grads(GetParam(), "qlora_grads", TrainMethod::Qlora, false); }
// In bf16 an MoE model's top-k routing is discontinuous: a token whose two best experts' logits lie
// within bf16 rounding of each other goes to a different expert in ours and in torch's run, and
// that, not rounding noise, dominates the logits (torch's own bf16-vs-f32 logits differ by 0.91 on
// mixtral against 0.05-0.11 on the dense fixtures). On the MoE fixtures the bf16 checks are the
// loss within twice torch's spread only (measured 0.59 and 0.84 of it); the 10-step curve drifts
// with each flip (qwen3-moe: 0.5% at step 10 against torch's 0.1% spread) and is not compared.
bool moe_fixture(const std::string& fixture) { return test::load_fixture(fixture).config.moe(); }

TEST_P(TrainParity, LoraBf16Gradients) {
  const Golden bf16(GetParam(), "lora_bf16_grads"), f32(GetParam(), "lora_grads");
  const double torch_bf16 = bf16.scalar("loss"), torch_f32 = f32.scalar("loss");
  const double spread = std::abs(torch_f32 - torch_bf16);
  if (moe_fixture(GetParam())) {
    TrainModel model(test::load_fixture(GetParam()), golden_options(TrainMethod::Lora, false, DType::BF16, GetParam()));
    load_params(model, bf16);
    const std::vector<TrainSequence> seqs = bf16.sequences();
    const double ours = objective(model.evaluate(make_batch(seqs, 0, seqs.size())));
    EXPECT_NEAR(ours, torch_bf16, kBf16SpreadFactor * spread);
    std::printf("[parity] %s bf16: loss %.7f, torch bf16 %.7f, torch f32 %.7f (%.2f of torch's spread)\n",
                GetParam().c_str(), ours, torch_bf16, torch_f32, std::abs(ours - torch_bf16) / spread);
    return;
  }
  check_grads(GetParam(), "lora_bf16_grads", TrainMethod::Lora, false, DType::BF16,
              {kBf16SpreadFactor * spread / torch_bf16, kBf16Grad, kBf16Logits});

  TrainModel model(test::load_fixture(GetParam()), golden_options(TrainMethod::Lora, false, DType::BF16, GetParam()));
  load_params(model, bf16);
  const std::vector<TrainSequence> seqs = bf16.sequences();
  const Batch batch = make_batch(seqs, 0, seqs.size());
  const double ours = objective(model.evaluate(batch));
  // RMS over the valid positions' logits of (ours - torch f32) against (torch bf16 - torch f32).
  const Tensor lo = model.logits(batch), lb = bf16.get("logits"), lf = f32.get("logits");
  const Tensor mask = bf16.get("attention_mask");
  const int64_t V = model.config().vocab_size;
  double ours_sq = 0, torch_sq = 0;
  for (int64_t r = 0; r < mask.numel(); ++r) {
    if (!mask.data<int64_t>()[r]) continue;
    for (int64_t v = 0; v < V; ++v) {
      const int64_t i = r * V + v;
      ours_sq += std::pow(double(lo.data<float>()[i]) - lf.data<float>()[i], 2);
      torch_sq += std::pow(double(lb.data<float>()[i]) - lf.data<float>()[i], 2);
    }
  }
  const double noise = std::sqrt(ours_sq / torch_sq);
  EXPECT_GE(noise, kBf16NoiseMin) << "our bf16 logits are too close to f32: no bf16 rounding?";
  EXPECT_LE(noise, kBf16NoiseMax) << "our bf16 logits are noisier than torch's bf16";
  std::printf("[parity] %s bf16: loss %.7f, torch bf16 %.7f, torch f32 %.7f (%.2f of torch's spread); rounding noise "
              "on the logits %.2f of torch's\n",
              GetParam().c_str(), ours, torch_bf16, torch_f32, std::abs(ours - torch_bf16) / spread, noise);
}

TEST_P(TrainParity, Nf4BaseEqualsBitsandbytes) {
  const Golden g(GetParam(), "qlora_grads");
  TrainModel model(test::load_fixture(GetParam()), golden_options(TrainMethod::Qlora, false, DType::F32, GetParam()));
  for (int64_t l = 0; l < model.config().num_hidden_layers; ++l) {
    for (const Linear* lin : model.layer_linears(l)) {
      if (!lin->qweight) {  // only an MoE router stays dense (as transformers' bitsandbytes path leaves it)
        EXPECT_TRUE(lin->name.ends_with(".gate")) << lin->name;
        continue;
      }
      const Tensor ours = dequantize_4bit(*lin->qweight), expected = g.get(lin->name + ".weight.nf4_dequant");
      ASSERT_EQ(ours.numel(), expected.numel());
      EXPECT_EQ(std::memcmp(ours.raw(), expected.raw(), ours.nbytes()), 0) << lin->name;  // byte-exact
    }
  }
}

// final_tol < 0: the final adapters are not compared.
void check_curve(const std::string& model_name, const std::string& case_name, TrainMethod method,
                 DType compute = DType::F32, double loss_tol = kCurveTol, double norm_tol = kCurveTol,
                 double final_tol = kFinalAbsTol) {
  SCOPED_TRACE(model_name + "/" + case_name);
  const Golden g(model_name, case_name);
  TrainModel model(test::load_fixture(model_name), golden_options(method, false, compute, model_name));
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
    EXPECT_NEAR(r.loss, losses.data<float>()[s], loss_tol * losses.data<float>()[s]) << "step " << s + 1;
    EXPECT_NEAR(r.grad_norm, norms.data<float>()[s], norm_tol * norms.data<float>()[s]) << "step " << s + 1;
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
  if (final_tol >= 0) {
    EXPECT_LE(worst, final_tol);
  }
  std::printf("[parity] %s %s: final adapters max abs difference %.2e\n", model_name.c_str(), case_name.c_str(), worst);
}

TEST_P(TrainParity, LoraTenStepCurve) { check_curve(GetParam(), "lora_curve", TrainMethod::Lora); }
TEST_P(TrainParity, QloraTenStepCurve) { check_curve(GetParam(), "qlora_curve", TrainMethod::Qlora); }
TEST_P(TrainParity, LoraBf16TenStepCurve) {
  if (moe_fixture(GetParam())) GTEST_SKIP() << "bf16 routing flips make an MoE curve incomparable (see LoraBf16Gradients)";
  const Tensor bf16 = Golden(GetParam(), "lora_bf16_curve").get("losses"), f32 = Golden(GetParam(), "lora_curve").get("losses");
  double spread = 0;  // torch's own largest relative bf16-vs-f32 loss difference over the curve
  for (int64_t s = 0; s < bf16.numel(); ++s)
    spread = std::max(spread, double(std::abs(bf16.data<float>()[s] - f32.data<float>()[s])) / bf16.data<float>()[s]);
  check_curve(GetParam(), "lora_bf16_curve", TrainMethod::Lora, DType::BF16,
              std::max(kBf16CurveLossTol, kBf16SpreadFactor * spread), kBf16CurveNormTol, -1);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TrainParity, ::testing::Values("llama-gqa", "qwen2", "qwen3", "llama-headdim", "mixtral",
                                                                   "qwen3-moe"),
                         [](const auto& info) {
                           std::string s = info.param;
                           std::replace(s.begin(), s.end(), '-', '_');
                           return s;
                         });

}  // namespace
}  // namespace qlora
