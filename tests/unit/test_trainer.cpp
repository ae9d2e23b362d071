// Trainer on a toy Trainable (softmax regression over a seeded feature table, optional dropout):
// gradient accumulation equals one big micro-batch, save -> resume continues bit-identically
// (AdamW, 8-bit AdamW, paged state; across epoch boundaries), the NaN/Inf guard, clipping and
// schedule values in StepResult, atomic checkpoints and their validation on resume,
// latest_checkpoint, and train() with intervals and a stop request.
#include <gtest/gtest.h>

#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>

#include "core/rng.h"
#include "data/dataset_mix.h"
#include "io/safetensors.h"
#include "io_test_util.h"
#include "train/trainer.h"

namespace qlora {
namespace {

namespace fs = std::filesystem;
using test::expect_error;
using test::TempDir;

// Softmax regression: row (b, t) with a target predicts it from the features X[ids[b, t]]
// (a fixed seeded table), logits = x W + b, summed cross-entropy. Dims: V vocab (= classes),
// F features. Each micro-batch accumulates its gradient in double and adds it to the f32 grads
// once, like a GEMM-based model would, so splitting a step into micro-batches changes only the f32
// rounding of that final sum.
class ToyModel final : public Trainable {
 public:
  ToyModel(int64_t V, int64_t F, uint64_t init_seed, float dropout = 0.0f, std::string prefix = "toy")
      : V_(V), F_(F), dropout_(dropout), prefix_(std::move(prefix)) {
    table_ = Tensor::zeros({V, F});
    Rng table_rng(1234);  // the inputs are data, not parameters: the same for every init seed
    for (int64_t i = 0; i < table_.numel(); ++i) table_.data<float>()[i] = 2.0f * table_rng.uniform() - 1.0f;
    w_ = Tensor::zeros({F, V});
    b_ = Tensor::zeros({V});
    Rng rng(init_seed);
    for (int64_t i = 0; i < w_.numel(); ++i) w_.data<float>()[i] = 0.2f * (rng.uniform() - 0.5f);
    for (int64_t i = 0; i < b_.numel(); ++i) b_.data<float>()[i] = 0.1f * (rng.uniform() - 0.5f);
    gw_ = Tensor::zeros({F, V});
    gb_ = Tensor::zeros({V});
  }

  LossSum forward_backward(const Batch& batch, double grad_scale, uint64_t dropout_seed) override {
    ++calls_;
    seeds_.push_back(dropout_seed);
    std::vector<double> dw(size_t(F_ * V_), 0.0), db(size_t(V_), 0.0);
    const LossSum s = run(batch, dropout_seed, &dw, &db);
    float* gw = gw_.data<float>();
    float* gb = gb_.data<float>();
    for (size_t i = 0; i < dw.size(); ++i) gw[i] += float(grad_scale * dw[i]);
    for (size_t i = 0; i < db.size(); ++i) gb[i] += float(grad_scale * db[i]);
    LossSum out = s;
    if (aux_coef_ > 0) {  // an MoE model's load-balancing loss: a different value per call
      out.aux_loss = 0.5 + 0.125 * double(calls_);
      out.aux_term = aux_coef_ * out.aux_loss * double(out.tokens);
    }
    returned_.push_back(out);
    if (calls_ - 1 >= zero_call_ && calls_ - 1 < zero_call_ + zero_count_) {
      std::fill(gw, gw + gw_.numel(), 0.0f);
      std::fill(gb, gb + gb_.numel(), 0.0f);
    }
    if (calls_ - 1 >= nan_call_ && calls_ - 1 < nan_call_ + nan_count_) {
      if (inf_grad_only_) gw[3] = std::numeric_limits<float>::infinity();
      else out.loss = std::numeric_limits<double>::quiet_NaN();
    }
    return out;
  }
  LossSum evaluate(const Batch& batch) override { return run(batch, 0, nullptr, nullptr); }
  std::vector<Param> parameters() override {
    return {{prefix_ + ".weight", w_, gw_, true}, {prefix_ + ".bias", b_, gb_, false}};
  }
  void zero_grad() override {
    std::fill(gw_.data<float>(), gw_.data<float>() + gw_.numel(), 0.0f);
    std::fill(gb_.data<float>(), gb_.data<float>() + gb_.numel(), 0.0f);
  }
  void parameters_updated() override { ++updates_; }
  Backend& backend() override { return *backend_; }
  MemoryStats memory() const override { return {}; }

  // The forward_backward call (0-based) that reports a NaN loss (or, with inf_grad_only, a finite
  // loss and an infinite gradient element), and `count` calls from it.
  void inject_nan_at(int64_t call, bool inf_grad_only = false, int64_t count = 1) {
    nan_call_ = call;
    inf_grad_only_ = inf_grad_only;
    nan_count_ = count;
  }
  // `count` forward_backward calls from `call` (0-based) leave every gradient exactly 0.
  void zero_grads_at(int64_t call, int64_t count) { zero_call_ = call, zero_count_ = count; }
  // Every forward_backward reports an aux loss weighted by `coef` in the objective, as an MoE
  // LlamaModel does (LossSum::aux_term).
  void report_aux_loss(double coef) { aux_coef_ = coef; }
  const std::vector<LossSum>& returned() const { return returned_; }
  int64_t updates() const { return updates_; }
  const std::vector<uint64_t>& seeds() const { return seeds_; }
  std::vector<float> values() const {
    std::vector<float> v(w_.data<float>(), w_.data<float>() + w_.numel());
    v.insert(v.end(), b_.data<float>(), b_.data<float>() + b_.numel());
    return v;
  }
  std::vector<float> grads() const {
    std::vector<float> v(gw_.data<float>(), gw_.data<float>() + gw_.numel());
    v.insert(v.end(), gb_.data<float>(), gb_.data<float>() + gb_.numel());
    return v;
  }

 private:
  std::shared_ptr<Backend> backend_ = make_cpu_backend();
  LossSum run(const Batch& batch, uint64_t dropout_seed, std::vector<double>* dw, std::vector<double>* db) const {
    const bool drop = dw && dropout_ > 0;
    Rng rng(dropout_seed);
    LossSum s;
    std::vector<double> x(static_cast<size_t>(F_)), logits(static_cast<size_t>(V_));
    for (int64_t r = 0; r < batch.rows(); ++r) {
      const int32_t target = batch.targets[size_t(r)];
      const float* xr = table_.data<float>() + int64_t(batch.ids[size_t(r)]) * F_;
      for (int64_t f = 0; f < F_; ++f) {
        const bool keep = !drop || rng.uniform() >= dropout_;  // drawn for every row: masks depend on the seed only
        x[size_t(f)] = keep ? double(xr[f]) / (drop ? 1.0 - dropout_ : 1.0) : 0.0;
      }
      if (target == kIgnoreIndex) continue;
      double mx = -1e300;
      for (int64_t k = 0; k < V_; ++k) {
        double z = b_.data<float>()[k];
        for (int64_t f = 0; f < F_; ++f) z += x[size_t(f)] * w_.data<float>()[f * V_ + k];
        logits[size_t(k)] = z;
        mx = std::max(mx, z);
      }
      double sum = 0;
      for (double z : logits) sum += std::exp(z - mx);
      s.loss += mx + std::log(sum) - logits[size_t(target)];
      ++s.tokens;
      if (!dw) continue;
      for (int64_t k = 0; k < V_; ++k) {
        const double d = std::exp(logits[size_t(k)] - mx) / sum - (k == target ? 1.0 : 0.0);
        (*db)[size_t(k)] += d;
        for (int64_t f = 0; f < F_; ++f) (*dw)[size_t(f * V_ + k)] += x[size_t(f)] * d;
      }
    }
    return s;
  }

  int64_t V_, F_;
  float dropout_;
  std::string prefix_;
  Tensor table_, w_, b_, gw_, gb_;
  int64_t calls_ = 0, updates_ = 0, nan_call_ = -1, nan_count_ = 1, zero_call_ = -1, zero_count_ = 0;
  bool inf_grad_only_ = false;
  std::vector<uint64_t> seeds_;
  double aux_coef_ = 0;
  std::vector<LossSum> returned_;
};

// V = 128 classes and F = 40 features: W has 5120 elements, above the 4096 under which 8-bit AdamW
// keeps f32 state, so the 8-bit path is exercised; the bias stays f32.
constexpr int64_t kV = 128, kF = 40, kT = 8;

// n sequences of kT seeded tokens, labelled for next-token prediction with the first label ignored
// (a prompt token), like an encoded example.
std::vector<TrainSequence> make_data(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<TrainSequence> out(n);
  for (auto& s : out) {
    for (int64_t t = 0; t < kT; ++t) {
      const int32_t id = int32_t(rng.next_u64() % uint64_t(kV));
      s.ids.push_back(id);
      s.labels.push_back(t == 0 ? kIgnoreIndex : id);
      s.position_ids.push_back(int32_t(t));
      s.segment_ids.push_back(0);
    }
    s.n_examples = 1;
  }
  return out;
}

TrainerConfig base_config() {
  TrainerConfig c;
  c.micro_batch = 2;
  c.grad_accum = 2;
  c.max_steps = 6;
  c.lr = 1e-2;
  c.schedule = ScheduleKind::Cosine;
  c.warmup_steps = 1;
  c.max_grad_norm = 1.0;
  c.adamw.weight_decay = 0.01;
  c.seed = 5;
  c.shuffle = true;
  return c;
}

std::vector<std::string> dir_entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Accumulating 4 micro-batches of 1 sequence gives the update of 1 micro-batch of 4. Not bit-equal:
// the toy adds each micro-batch's double gradient to the f32 grads once, so 4 partial f32 sums
// replace one; each rounding is <= 2^-24 of a partial sum, so the difference stays near
// 4 * 6e-8 = 2.4e-7 of the gradient's largest element (measured: <= 1e-7). kGradTol = 1e-6 of the
// largest element leaves margin. AdamW's update (~ lr * m / sqrt(v)) amplifies a small relative
// grad difference into at most about the same relative share of lr per step: kParamTol = 1e-6
// absolute for lr = 1e-2 over 3 steps (measured 1.5e-8). The loss of step 1 differs only by the
// grouping of double sums (4e-16); later steps see params differing as above: measured 7e-11 relative, kLossTol = 1e-8 relative, still far below the 1e-3 the loss
// moves per step.
TEST(Trainer, GradAccumulationMatchesOneLargeMicroBatch) {
  constexpr double kGradTol = 1e-6;
  constexpr double kParamTol = 1e-6;
  constexpr double kLossTol = 1e-8;
  const auto data = make_data(12, 77);
  SCOPED_TRACE("data seed 77, init seed 3");
  TrainerConfig a_cfg = base_config();
  a_cfg.micro_batch = 1;
  a_cfg.grad_accum = 4;
  TrainerConfig b_cfg = base_config();
  b_cfg.micro_batch = 4;
  b_cfg.grad_accum = 1;
  ToyModel a_model(kV, kF, 3), b_model(kV, kF, 3);  // no dropout: seeds differ per micro-batch
  Trainer a(a_model, data, {}, a_cfg), b(b_model, data, {}, b_cfg);
  for (int s = 0; s < 3; ++s) {
    const StepResult ra = a.step(), rb = b.step();
    SCOPED_TRACE("step " + std::to_string(s + 1));
    EXPECT_EQ(ra.tokens, rb.tokens);
    EXPECT_EQ(ra.tokens, 4 * (kT - 1));  // per sequence: the last row has no next token
    EXPECT_EQ(ra.input_tokens, 4 * kT);
    EXPECT_NEAR(ra.loss, rb.loss, kLossTol * std::abs(rb.loss));
    EXPECT_NEAR(ra.grad_norm, rb.grad_norm, kGradTol * rb.grad_norm);
    const auto ga = a_model.grads(), gb = b_model.grads();  // as clipped and applied
    double largest = 0, worst = 0;
    for (size_t i = 0; i < ga.size(); ++i) {
      largest = std::max(largest, std::abs(double(gb[i])));
      worst = std::max(worst, std::abs(double(ga[i]) - gb[i]));
    }
    ASSERT_GT(largest, 0.0);
    EXPECT_LT(worst / largest, kGradTol);
    const auto pa = a_model.values(), pb = b_model.values();
    double worst_p = 0;
    for (size_t i = 0; i < pa.size(); ++i) worst_p = std::max(worst_p, std::abs(double(pa[i]) - pb[i]));
    EXPECT_LT(worst_p, kParamTol);
    std::cout << "step " << s + 1 << ": grad diff / largest grad " << worst / largest << ", max param diff "
              << worst_p << ", relative loss diff " << std::abs(ra.loss - rb.loss) / std::abs(rb.loss) << "\n";
  }
  // 12 sequences, 4 per step: epoch 0 is used up; epoch 1 starts lazily with the 4th step.
  EXPECT_EQ(a.data_position().epoch, 0);
  EXPECT_EQ(a.data_position().index, 12);
}

// Straight run of kSteps vs split + save + a new model/optimizer/trainer + resume: bit-identical.
struct ResumeCase {
  OptimizerKind optimizer;
  bool paged;
  int64_t split;  // steps before the checkpoint
};

void PrintTo(const ResumeCase& c, std::ostream* os) {
  *os << optimizer_kind_name(c.optimizer) << (c.paged ? " paged" : " heap") << " split " << c.split;
}

class TrainerResume : public ::testing::TestWithParam<ResumeCase> {};

TEST_P(TrainerResume, ContinuesBitIdentically) {
  const ResumeCase rc = GetParam();
  constexpr int64_t kSteps = 6;
  constexpr float kDropout = 0.25f;  // dropout on: the per-micro-batch seeds must match too
  TempDir straight_dir, split_dir;
  // 7 sequences, micro-batches of 2: each epoch uses 6 and drops 1, so steps 2 and 4 cross epochs.
  const auto data = make_data(7, 11);
  TrainerConfig cfg = base_config();
  cfg.optimizer = rc.optimizer;
  cfg.paged = rc.paged;
  cfg.max_steps = kSteps;

  cfg.output_dir = straight_dir.path();
  ToyModel ref_model(kV, kF, 3, kDropout);
  Trainer ref(ref_model, data, {}, cfg);
  std::vector<StepResult> ref_steps;
  for (int64_t s = 0; s < kSteps; ++s) ref_steps.push_back(ref.step());
  EXPECT_GE(ref.data_position().epoch, 2);
  // The premise: 8-bit AdamW keeps the weight's moments as 8-bit codes (it is >= 4096 elements).
  const auto ref_state = ref.optimizer().state_dict();
  const bool has_codes = std::any_of(ref_state.begin(), ref_state.end(),
                                     [](const auto& kv) { return kv.second.dtype() == DType::U8; });
  EXPECT_EQ(has_codes, rc.optimizer == OptimizerKind::AdamW8bit);

  cfg.output_dir = split_dir.path();
  std::string ckpt;
  {
    ToyModel first_model(kV, kF, 3, kDropout);
    Trainer first(first_model, data, {}, cfg);
    for (int64_t s = 0; s < rc.split; ++s) EXPECT_EQ(first.step().loss, ref_steps[size_t(s)].loss);
    ckpt = first.save_checkpoint();
    EXPECT_EQ(fs::path(ckpt).filename().string(), "checkpoint-" + std::to_string(rc.split));
  }
  ToyModel model(kV, kF, 999, kDropout);  // another init: resume must overwrite every value
  Trainer trainer(model, data, {}, cfg);
  trainer.resume(ckpt);
  EXPECT_EQ(trainer.step_count(), rc.split);
  EXPECT_EQ(model.updates(), 1);  // parameters_updated after loading
  for (int64_t s = rc.split; s < kSteps; ++s) {
    const StepResult r = trainer.step();
    const StepResult& e = ref_steps[size_t(s)];
    SCOPED_TRACE("step " + std::to_string(s + 1));
    EXPECT_EQ(r.step, e.step);
    EXPECT_EQ(r.loss, e.loss);
    EXPECT_EQ(r.grad_norm, e.grad_norm);
    EXPECT_EQ(r.lr, e.lr);
    EXPECT_EQ(r.tokens, e.tokens);
  }
  EXPECT_EQ(model.values(), ref_model.values());
  EXPECT_EQ(trainer.data_position().epoch, ref.data_position().epoch);
  EXPECT_EQ(trainer.data_position().index, ref.data_position().index);
  EXPECT_EQ(trainer.optimizer().steps_taken(), ref.optimizer().steps_taken());
  const std::vector<uint64_t> tail(ref_model.seeds().end() - (kSteps - rc.split) * cfg.grad_accum,
                                   ref_model.seeds().end());
  EXPECT_EQ(model.seeds(), tail);
}

INSTANTIATE_TEST_SUITE_P(Optimizers, TrainerResume,
                         ::testing::Values(ResumeCase{OptimizerKind::AdamW, false, 3},
                                           ResumeCase{OptimizerKind::AdamW8bit, false, 3},
                                           ResumeCase{OptimizerKind::AdamW, true, 3},
                                           ResumeCase{OptimizerKind::AdamW8bit, true, 3},
                                           // step 3 ends exactly at an epoch's end; step 2 inside epoch 1
                                           ResumeCase{OptimizerKind::AdamW, false, 2},
                                           ResumeCase{OptimizerKind::AdamW8bit, false, 2}),
                         [](const auto& info) {
                           return optimizer_kind_name(info.param.optimizer) + (info.param.paged ? "_paged" : "_heap") +
                                  "_split" + std::to_string(info.param.split);
                         });

// An MoE model's load-balancing term is in the step's loss (the objective), and StepResult's
// aux_loss is the micro-batches' aux loss, each weighed by its share of the targets.
TEST(Trainer, StepLossIncludesTheAuxTermAndReportsTheAuxLoss) {
  TrainerConfig cfg = base_config();
  cfg.micro_batch = 1;
  cfg.grad_accum = 3;
  ToyModel model(kV, kF, 3);
  model.report_aux_loss(0.02);
  Trainer trainer(model, make_data(12, 77), {}, cfg);
  const StepResult r = trainer.step();
  ASSERT_EQ(model.returned().size(), 3u);
  double ce = 0, term = 0, aux = 0;
  int64_t tokens = 0;
  for (const LossSum& s : model.returned()) ce += s.loss, term += s.aux_term, aux += s.aux_loss * double(s.tokens), tokens += s.tokens;
  ASSERT_EQ(tokens, r.tokens);
  EXPECT_NEAR(r.loss, (ce + term) / double(tokens), 1e-12);
  EXPECT_NEAR(r.aux_loss, aux / double(tokens), 1e-12);
  EXPECT_GT(r.aux_loss, 0.5);  // the mean of 0.625, 0.75, 0.875: not one micro-batch's
  EXPECT_NEAR(r.aux_loss, 0.75, 1e-12);
}

TEST(Trainer, DataOrderIsShuffledPerEpochAndMicroBatchesNeverSpanEpochs) {
  const auto data = make_data(7, 11);
  TrainerConfig cfg = base_config();
  cfg.micro_batch = 3;
  cfg.grad_accum = 1;
  ToyModel model(kV, kF, 3);
  Trainer trainer(model, data, {}, cfg);
  // 7 sequences, 3 per micro-batch: 2 micro-batches per epoch, the 7th sequence of each epoch dropped.
  for (int s = 0; s < 3; ++s) trainer.step();
  EXPECT_EQ(trainer.data_position().epoch, 1);
  EXPECT_EQ(trainer.data_position().index, 3);
  EXPECT_NE(shuffled_indices(7, cfg.seed), shuffled_indices(7, cfg.seed + 1));  // (sanity of the premise)

  cfg.micro_batch = 8;
  Trainer too_big(model, data, {}, cfg);
  expect_error([&] { too_big.step(); }, {"[train]", "micro_batch 8"});
  Trainer empty(model, {}, {}, base_config());
  expect_error([&] { empty.step(); }, {"[train]", "no training sequences"});
}

TEST(Trainer, NonFiniteLossOrGradientSkipsTheUpdate) {
  for (bool inf_grad_only : {false, true}) {
    SCOPED_TRACE(inf_grad_only ? "inf gradient" : "NaN loss");
    const auto data = make_data(8, 21);
    TrainerConfig cfg = base_config();
    cfg.grad_accum = 1;
    ToyModel model(kV, kF, 3);
    model.inject_nan_at(2, inf_grad_only);  // the third step's only micro-batch
    Trainer trainer(model, data, {}, cfg);
    trainer.step();
    trainer.step();
    const auto before = model.values();
    const StepResult r = trainer.step();
    EXPECT_TRUE(r.skipped);
    EXPECT_EQ(r.step, 3);
    EXPECT_EQ(std::isnan(r.loss), !inf_grad_only);
    EXPECT_EQ(model.values(), before);  // untouched, bit for bit
    for (float g : model.grads()) ASSERT_EQ(g, 0.0f);  // nothing non-finite left behind
    EXPECT_EQ(trainer.step_count(), 3);
    EXPECT_EQ(trainer.optimizer().steps_taken(), 2);
    EXPECT_EQ(model.updates(), 2);
    const StepResult next = trainer.step();
    EXPECT_FALSE(next.skipped);
    EXPECT_TRUE(std::isfinite(next.loss));
    EXPECT_NE(model.values(), before);
    EXPECT_EQ(trainer.optimizer().steps_taken(), 3);
  }
}

TEST(Trainer, ReportsClippingAndScheduleValues) {
  const auto data = make_data(10, 31);
  TrainerConfig cfg = base_config();
  cfg.shuffle = false;  // micro-batch s holds sequences 2s, 2s+1
  cfg.grad_accum = 1;
  cfg.max_steps = 5;
  cfg.lr = 0.1;
  cfg.schedule = ScheduleKind::Linear;
  cfg.warmup_steps = 2;
  cfg.max_grad_norm = 0.05;
  ToyModel model(kV, kF, 3), probe(kV, kF, 3);
  Trainer trainer(model, data, {}, cfg);
  // transformers' get_linear_schedule_with_warmup: step / warmup, then (total - step) / (total - warmup).
  const double expected_lr[] = {0.0, 0.05, 0.1, 0.1 * 2 / 3, 0.1 * 1 / 3};
  const auto initial = model.values();
  for (int s = 0; s < 5; ++s) {
    SCOPED_TRACE("step " + std::to_string(s + 1));
    // The pre-clip norm of the step's gradient, from an independent copy at the same params.
    const Batch batch = make_batch(data, size_t(2 * s), 2);
    probe.zero_grad();
    std::vector<Param> pp = probe.parameters(), mp = model.parameters();
    for (size_t i = 0; i < pp.size(); ++i)
      std::memcpy(pp[i].value.raw(), mp[i].value.raw(), mp[i].value.nbytes());
    probe.forward_backward(batch, 1.0 / double(batch.target_count()), 0);
    const double norm = grad_norm(probe.parameters());

    const StepResult r = trainer.step();
    EXPECT_NEAR(r.lr, expected_lr[s], 1e-15);
    EXPECT_EQ(r.grad_norm, norm);
    ASSERT_GT(norm, cfg.max_grad_norm);  // the premise: clipping is active
    // The grads left in the model are the clipped ones: norm * max / (norm + 1e-6).
    // Tolerance: the clip factor is applied in f32 (rounding ~6e-8 relative of 0.05 = 3e-9); 1e-7 is loose
    // enough for that and still far below the unclipped norm.
    EXPECT_NEAR(grad_norm(model.parameters()), cfg.max_grad_norm * norm / (norm + 1e-6), 1e-7);
    if (s == 0) {
      EXPECT_EQ(model.values(), initial);  // lr 0 at the first warm-up step
    }
  }

  // max_grad_norm <= 0: no clipping, the norm still reported.
  cfg.max_grad_norm = 0;
  ToyModel free_model(kV, kF, 3);
  Trainer free_trainer(free_model, data, {}, cfg);
  const StepResult r = free_trainer.step();
  EXPECT_EQ(grad_norm(free_model.parameters()), r.grad_norm);
  EXPECT_GT(r.grad_norm, 0.05);
}

TEST(Trainer, EvaluateIsTheTokenWeightedMeanLoss) {
  const auto data = make_data(6, 41);
  auto validation = make_data(5, 42);
  validation[3].labels.assign(kT, kIgnoreIndex);  // fewer tokens in one sequence: weights matter
  ToyModel model(kV, kF, 3, 0.5f);
  Trainer trainer(model, data, validation, base_config());
  double loss = 0;
  int64_t tokens = 0;
  for (size_t i = 0; i < validation.size(); ++i) {
    const LossSum s = model.evaluate(make_batch(validation, i, 1));
    loss += s.loss;
    tokens += s.tokens;
  }
  EXPECT_EQ(tokens, 4 * (kT - 1));  // the all-ignored sequence adds none
  // Only the grouping of the double sums differs: ~1e-16 relative.
  EXPECT_NEAR(trainer.evaluate(), loss / double(tokens), 1e-12);
  Trainer no_validation(model, data, {}, base_config());
  EXPECT_TRUE(std::isnan(no_validation.evaluate()));
}

TEST(Trainer, CheckpointIsAtomicAndValidatedOnResume) {
  TempDir out;
  const auto data = make_data(8, 51);
  TrainerConfig cfg = base_config();
  cfg.output_dir = out.path();
  ToyModel model(kV, kF, 3);
  Trainer trainer(model, data, {}, cfg);
  trainer.step();
  trainer.step();
  const std::string ckpt = trainer.save_checkpoint();
  EXPECT_EQ(ckpt, out.file("checkpoint-2"));
  EXPECT_EQ(dir_entries(out.path()), std::vector<std::string>{"checkpoint-2"});
  EXPECT_EQ(dir_entries(ckpt), (std::vector<std::string>{"model.safetensors", "optimizer.safetensors",
                                                          "trainer_state.json"}));
  // Saving the same step again replaces the folder and leaves nothing else behind.
  EXPECT_EQ(trainer.save_checkpoint(), ckpt);
  EXPECT_EQ(dir_entries(out.path()), std::vector<std::string>{"checkpoint-2"});

  // Each broken copy must fail naming the file, and leave the trainer untouched.
  auto broken_copy = [&](const std::string& name) {
    const std::string dir = out.file(name);
    fs::copy(ckpt, dir);
    return dir;
  };
  ToyModel victim(kV, kF, 8);
  Trainer target(victim, data, {}, cfg);
  const auto victim_values = victim.values();

  const std::string truncated = broken_copy("truncated");
  fs::resize_file(truncated + "/model.safetensors", fs::file_size(truncated + "/model.safetensors") / 2);
  expect_error([&] { target.resume(truncated); }, {"model.safetensors"});

  const std::string no_state = broken_copy("no_state");
  fs::remove(no_state + "/trainer_state.json");
  expect_error([&] { target.resume(no_state); }, {"trainer_state.json", "missing"});

  const std::string no_opt = broken_copy("no_opt");
  fs::remove(no_opt + "/optimizer.safetensors");
  expect_error([&] { target.resume(no_opt); }, {"optimizer.safetensors", "missing"});

  const std::string bad_json = broken_copy("bad_json");
  test::write_text(bad_json + "/trainer_state.json", "{\"step\": 2,");
  expect_error([&] { target.resume(bad_json); }, {"trainer_state.json", "malformed JSON"});

  const std::string bad_key = broken_copy("bad_key");
  std::string text;
  {
    std::ifstream in(ckpt + "/trainer_state.json");
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  const size_t at = text.find("\"step\": 2");
  ASSERT_NE(at, std::string::npos) << text;
  text.replace(at, 9, "\"step\": \"two\"");
  test::write_text(bad_key + "/trainer_state.json", text);
  expect_error([&] { target.resume(bad_key); }, {"trainer_state.json", "\"step\"", "integer"});

  ToyModel other(kV, kF, 3, 0.0f, "other");
  Trainer other_trainer(other, data, {}, cfg);
  expect_error([&] { other_trainer.resume(ckpt); }, {"model.safetensors", "other.weight", "missing"});

  ToyModel smaller(kV, kF - 1, 3);
  Trainer smaller_trainer(smaller, data, {}, cfg);
  expect_error([&] { smaller_trainer.resume(ckpt); }, {"model.safetensors", "toy.weight", "(39, 128)"});

  Trainer other_data(victim, make_data(9, 51), {}, cfg);
  expect_error([&] { other_data.resume(ckpt); }, {"trainer_state.json", "train_sequences"});

  TrainerConfig cfg8 = cfg;
  cfg8.optimizer = OptimizerKind::AdamW8bit;
  Trainer other_opt(victim, data, {}, cfg8);
  expect_error([&] { other_opt.resume(ckpt); }, {"trainer_state.json", "optimizer"});

  const std::string foreign_state = broken_copy("foreign_state");
  Tensor step_t = Tensor::zeros({}, DType::I64);
  write_safetensors(foreign_state + "/optimizer.safetensors", {{"ghost.exp_avg", Tensor::zeros({4})}, {"step", step_t}});
  expect_error([&] { target.resume(foreign_state); }, {"optimizer.safetensors", "ghost.exp_avg"});

  const std::string no_opt_state = broken_copy("no_opt_state");
  write_safetensors(no_opt_state + "/optimizer.safetensors", {});
  expect_error([&] { target.resume(no_opt_state); }, {"optimizer.safetensors", "no state"});

  expect_error([&] { target.resume(out.file("nowhere")); }, {"nowhere", "not a directory"});
  EXPECT_EQ(victim.values(), victim_values);
  EXPECT_EQ(target.step_count(), 0);
  EXPECT_EQ(victim.updates(), 0);

  target.resume(ckpt);  // the intact one loads
  EXPECT_EQ(victim.values(), model.values());
  EXPECT_EQ(target.step_count(), 2);

  TrainerConfig no_out = cfg;
  no_out.output_dir.clear();
  Trainer nowhere(model, data, {}, no_out);
  expect_error([&] { nowhere.save_checkpoint(); }, {"[train]", "output_dir"});
}

// Before any update the optimizer has no state: checkpoint-0 holds none and resuming from it is a
// fresh start.
TEST(Trainer, ResumeFromAStepZeroCheckpoint) {
  TempDir out;
  const auto data = make_data(8, 71);
  TrainerConfig cfg = base_config();
  cfg.output_dir = out.path();
  ToyModel model(kV, kF, 3), resumed_model(kV, kF, 4);
  Trainer trainer(model, data, {}, cfg);
  const std::string ckpt = trainer.save_checkpoint();
  EXPECT_EQ(ckpt, out.file("checkpoint-0"));
  Trainer resumed(resumed_model, data, {}, cfg);
  resumed.resume(ckpt);
  for (int s = 0; s < 3; ++s) EXPECT_EQ(trainer.step().loss, resumed.step().loss);
  EXPECT_EQ(model.values(), resumed_model.values());
}

TEST(Trainer, LatestCheckpointPicksTheHighestCompleteStep) {
  TempDir out;
  EXPECT_EQ(latest_checkpoint(out.path()), "");
  EXPECT_EQ(latest_checkpoint(out.file("absent")), "");
  auto make = [&](const std::string& name, bool complete) {
    fs::create_directories(out.file(name));
    test::write_text(out.file(name) + "/model.safetensors", "x");
    test::write_text(out.file(name) + "/optimizer.safetensors", "x");
    if (complete) test::write_text(out.file(name) + "/trainer_state.json", "{}");
  };
  make("checkpoint-2", true);
  make("checkpoint-10", true);  // numeric, not lexicographic: 10 > 9 > 2
  make("checkpoint-9", true);
  make("checkpoint-11", false);                // incomplete
  make("checkpoint-12.tmp-4242", true);        // an interrupted save
  make("checkpoint-13.old-4242", true);        // a displaced folder
  make("checkpoint-x", true);
  test::write_text(out.file("checkpoint-20"), "a file, not a folder");
  EXPECT_EQ(latest_checkpoint(out.path()), out.file("checkpoint-10"));
}

TEST(Trainer, TrainSavesOnIntervalsAndOnStop) {
  const auto data = make_data(8, 61);
  const auto validation = make_data(3, 62);
  {
    TempDir out;
    TrainerConfig cfg = base_config();
    cfg.output_dir = out.path();
    cfg.max_steps = 5;
    cfg.save_every = 2;
    cfg.eval_every = 2;
    ToyModel model(kV, kF, 3);
    Trainer trainer(model, data, validation, cfg);
    std::vector<int64_t> steps, evals;
    trainer.train([&](const StepResult& r) { steps.push_back(r.step); },
                  [&](int64_t step, double loss) {
                    evals.push_back(step);
                    EXPECT_TRUE(std::isfinite(loss));
                  });
    EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4, 5}));
    EXPECT_EQ(evals, (std::vector<int64_t>{2, 4}));
    EXPECT_EQ(dir_entries(out.path()),
              (std::vector<std::string>{"checkpoint-2", "checkpoint-4", "checkpoint-5"}));
    EXPECT_EQ(latest_checkpoint(out.path()), out.file("checkpoint-5"));
  }
  {
    TempDir out;
    TrainerConfig cfg = base_config();
    cfg.output_dir = out.path();
    cfg.max_steps = 10;
    ToyModel model(kV, kF, 3);
    Trainer trainer(model, data, {}, cfg);
    int calls = 0;
    trainer.train([&](const StepResult&) { ++calls; }, {}, [&] { return calls >= 2; });
    EXPECT_EQ(calls, 2);
    EXPECT_EQ(trainer.step_count(), 2);
    EXPECT_EQ(dir_entries(out.path()), std::vector<std::string>{"checkpoint-2"});
  }
}

// K non-finite steps in a row stop train() with an error naming the steps, the key and the last
// good checkpoint; no checkpoint of the diverged stretch is written. A shorter streak is survived.
TEST(Trainer, ConsecutiveNonFiniteStepsStopTheRun) {
  const auto data = make_data(8, 81);
  TempDir out;
  TrainerConfig cfg = base_config();
  cfg.grad_accum = 1;
  cfg.max_steps = 20;
  cfg.save_every = 2;
  cfg.max_consecutive_nonfinite = 3;
  cfg.output_dir = out.path();
  ToyModel model(kV, kF, 3);
  model.inject_nan_at(4, false, 100);  // every step from the fifth on
  Trainer trainer(model, data, {}, cfg);
  std::vector<int64_t> steps;
  expect_error([&] { trainer.train([&](const StepResult& r) { steps.push_back(r.step); }); },
               {"[train]", "steps 5 to 7", "3 in a row", "max_consecutive_nonfinite_steps", "diverged",
                "last good checkpoint is " + out.file("checkpoint-4")});
  EXPECT_EQ(steps.size(), 7u);
  EXPECT_EQ(trainer.nonfinite_steps(), 3);
  // Step 6 would have been saved: it was skipped, so checkpoint-4 stays the newest.
  EXPECT_EQ(dir_entries(out.path()), (std::vector<std::string>{"checkpoint-2", "checkpoint-4"}));

  // Two in a row with a limit of three: the run goes on and ends normally.
  TempDir out2;
  cfg.output_dir = out2.path();
  cfg.max_steps = 8;
  ToyModel survivor(kV, kF, 3);
  survivor.inject_nan_at(2, false, 2);
  Trainer ok(survivor, data, {}, cfg);
  ok.train();
  EXPECT_EQ(ok.nonfinite_steps(), 2);
  EXPECT_EQ(ok.nonfinite_streak(), 0);
  EXPECT_EQ(ok.step_count(), 8);

  // A collapsed model (finite loss, gradient exactly 0) counts toward the same streak.
  TempDir out3;
  cfg.output_dir = out3.path();
  ToyModel dead(kV, kF, 3);
  dead.zero_grads_at(1, 100);
  Trainer collapsed(dead, data, {}, cfg);
  expect_error([&] { collapsed.train(); }, {"steps 2 to 4", "gradient of exactly 0"});
  EXPECT_EQ(collapsed.nonfinite_steps(), 0);
}

TEST(Trainer, SaveTotalLimitKeepsTheNewestCheckpoints) {
  const auto data = make_data(8, 82);
  TempDir out;
  TrainerConfig cfg = base_config();
  cfg.max_steps = 7;
  cfg.save_every = 1;
  cfg.save_total_limit = 2;
  cfg.output_dir = out.path();
  ToyModel model(kV, kF, 3);
  Trainer trainer(model, data, {}, cfg);
  trainer.train();
  EXPECT_EQ(dir_entries(out.path()), (std::vector<std::string>{"checkpoint-6", "checkpoint-7"}));
  prune_checkpoints(out.path(), 0);  // 0 keeps all
  EXPECT_EQ(dir_entries(out.path()).size(), 2u);
}

TEST(Trainer, StaleTempFoldersAreRemovedAndNeverCountAsCheckpoints) {
  TempDir out;
  const auto data = make_data(8, 83);
  TrainerConfig cfg = base_config();
  cfg.output_dir = out.path();
  ToyModel model(kV, kF, 3);
  Trainer trainer(model, data, {}, cfg);
  trainer.step();
  trainer.step();
  const std::string ckpt2 = trainer.save_checkpoint();
  trainer.step();
  const std::string ckpt3 = trainer.save_checkpoint();
  // What kills at different points of a save leave: a complete-looking temp folder of a newer
  // step, a displaced folder whose replacement landed, one whose replacement did not, temp files.
  fs::copy(ckpt3, out.file("checkpoint-10.tmp-4242"));
  fs::copy(ckpt2, out.file("checkpoint-2.old-4242"));
  fs::rename(ckpt3, out.file("checkpoint-3.old-4243"));
  fs::copy(ckpt2, out.file("checkpoint-1.deleting-4244"));
  test::write_text(out.file("config.yaml.tmp.4245"), "half");
  test::write_text(out.file("config.yaml"), "kept");
  fs::create_directories(out.file("adapter"));
  test::write_text(out.file("adapter/adapter_config.json.tmp.4246"), "half");
  EXPECT_EQ(list_checkpoints(out.path()), std::vector<std::string>{ckpt2});

  const std::vector<std::string> notes = remove_stale_outputs(out.path());
  EXPECT_EQ(notes.size(), 6u);
  EXPECT_EQ(dir_entries(out.path()),
            (std::vector<std::string>{"adapter", "checkpoint-2", "checkpoint-3", "config.yaml"}));
  EXPECT_TRUE(dir_entries(out.file("adapter")).empty());
  EXPECT_EQ(list_checkpoints(out.path()), (std::vector<std::string>{ckpt3, ckpt2}));
  ToyModel again(kV, kF, 9);
  Trainer resumed(again, data, {}, cfg);
  resumed.resume(ckpt3);  // the restored folder is the intact checkpoint
  EXPECT_EQ(again.values(), model.values());
}

TEST(Trainer, ResumeLatestFallsBackFromACorruptCheckpoint) {
  TempDir out;
  const auto data = make_data(8, 84);
  TrainerConfig cfg = base_config();
  cfg.output_dir = out.path();
  ToyModel model(kV, kF, 3);
  Trainer trainer(model, data, {}, cfg);
  trainer.step();
  const std::string good = trainer.save_checkpoint();
  const auto good_values = model.values();
  trainer.step();
  const std::string bad = trainer.save_checkpoint();
  fs::resize_file(bad + "/model.safetensors", 10);

  ToyModel fresh(kV, kF, 9);
  Trainer resumed(fresh, data, {}, cfg);
  std::vector<std::string> warnings;
  EXPECT_EQ(resumed.resume_latest(out.path(), &warnings), good);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find(bad), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("resuming from " + good), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("model.safetensors"), std::string::npos) << warnings[0];
  EXPECT_EQ(fresh.values(), good_values);
  EXPECT_EQ(resumed.step_count(), 1);

  fs::resize_file(good + "/optimizer.safetensors", 3);
  ToyModel none(kV, kF, 9);
  Trainer nothing(none, data, {}, cfg);
  expect_error([&] { nothing.resume_latest(out.path(), nullptr); }, {"no checkpoint in", bad, good});
  TempDir empty;
  EXPECT_EQ(nothing.resume_latest(empty.path(), nullptr), "");
}

}  // namespace
}  // namespace qlora
