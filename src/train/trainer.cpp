// The training loop: data order, gradient accumulation, the NaN/Inf guard, clipping, schedule and
// optimizer step, evaluation and the train() driver. Checkpoint IO is in checkpoint.cpp.
// Tested in tests/unit/test_trainer.cpp with a toy softmax-regression Trainable.
#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "core/rng.h"
#include "data/token_cache.h"
#include "data/dataset_mix.h"

namespace qlora {
namespace {

// Dropout seed of micro-batch `micro` of optimizer step `step` (0-based): a function of the
// position in the run only, so a resumed run draws the same masks. splitmix64 is a bijection, so
// distinct (seed, step, micro) give distinct seeds.
uint64_t dropout_seed(uint64_t seed, int64_t step, int64_t micro) {
  return splitmix64(splitmix64(splitmix64(seed) ^ uint64_t(step)) ^ uint64_t(micro));
}

std::unique_ptr<StateStore> make_store(const TrainerConfig& config) {
  if (!config.paged) return make_heap_state_store();
  // The spill file goes next to the checkpoints: the output disk is the one sized for the run.
  if (!config.output_dir.empty()) std::filesystem::create_directories(config.output_dir);
  return make_paged_state_store(config.output_dir);
}

}  // namespace

Trainer::Trainer(Trainable& model, std::vector<TrainSequence> train, std::vector<TrainSequence> validation,
                 TrainerConfig config, std::shared_ptr<Communicator> comm)
    : model_(model),
      train_(std::move(train)),
      validation_(std::move(validation)),
      config_(std::move(config)),
      comm_(comm ? std::move(comm) : make_local_communicator()) {
  if (config_.micro_batch < 1) fail("train", "micro_batch must be >= 1; got {}", config_.micro_batch);
  if (config_.grad_accum < 1) fail("train", "grad_accum must be >= 1; got {}", config_.grad_accum);
  if (config_.max_steps < 0) fail("train", "max_steps must be >= 0; got {}", config_.max_steps);
  if (config_.warmup_steps < 0) fail("train", "warmup_steps must be >= 0; got {}", config_.warmup_steps);
  if (!(config_.lr >= 0) || !std::isfinite(config_.lr)) fail("train", "lr must be finite and >= 0; got {}", config_.lr);
  schedule_.kind = config_.schedule;
  schedule_.peak_lr = config_.lr;
  schedule_.warmup_steps = config_.warmup_steps;
  schedule_.total_steps = config_.max_steps;
  optimizer_ = make_optimizer(config_.optimizer, config_.adamw, make_store(config_), model_.backend().shared_from_this());
}

Trainer::~Trainer() = default;

int64_t steps_for_epochs(double epochs, size_t sequences, int64_t per_step) {
  if (per_step < 1) fail("train", "sequences per step must be >= 1; got {}", per_step);
  return std::max<int64_t>(1, int64_t(std::ceil(epochs * double(sequences) / double(per_step))));
}

// The next micro_batch sequences of the epoch order. A micro-batch never spans two epochs: when
// fewer than micro_batch sequences are left, they are dropped and the next epoch (reshuffled with
// seed + epoch) starts. order_ is rebuilt lazily from (seed, epoch), so resume() only restores
// position_ and clears it.
std::vector<size_t> Trainer::next_micro_batch_indices() {
  const size_t n = train_.size();
  const size_t mb = size_t(config_.micro_batch);
  auto build_order = [&] {
    if (config_.shuffle) {
      order_ = shuffled_indices(n, config_.seed + uint64_t(position_.epoch));
    } else {
      order_.resize(n);
      for (size_t i = 0; i < n; ++i) order_[i] = i;
    }
  };
  if (order_.size() != n) build_order();
  if (size_t(position_.index) + mb > n) {
    ++position_.epoch;
    position_.index = 0;
    build_order();
  }
  std::vector<size_t> out(order_.begin() + position_.index, order_.begin() + position_.index + ptrdiff_t(mb));
  position_.index += int64_t(mb);
  return out;
}

StepResult Trainer::step() {
  if (train_.empty()) fail("train", "no training sequences");
  if (size_t(config_.micro_batch) > train_.size())
    fail("train", "micro_batch {} exceeds the {} training sequences; lower micro_batch", config_.micro_batch,
         train_.size());
  model_.backend().fit_to_load();
  const auto t0 = std::chrono::steady_clock::now();
  StepResult r;
  r.step = step_ + 1;

  // All micro-batches first: the gradient scale is 1 / (target tokens of the whole step), so the
  // accumulated gradient is that of the step's mean loss however it is split into micro-batches.
  // With N ranks the step's N * grad_accum micro-batches are drawn in the global order by every
  // rank (the data position stays global); this rank keeps every N-th, from its rank on.
  const int64_t ranks = comm_->size(), rank = comm_->rank();
  std::vector<Batch> batches;
  std::vector<int64_t> global_index;  // each kept micro-batch's index in the step: its dropout seed
  batches.reserve(size_t(config_.grad_accum));
  for (int64_t m = 0; m < config_.grad_accum * ranks; ++m) {
    const std::vector<size_t> indices = next_micro_batch_indices();
    if (m % ranks != rank) continue;
    batches.push_back(make_batch(train_, indices));
    global_index.push_back(m);
    r.tokens += batches.back().target_count();
    r.input_tokens += batches.back().rows();
  }
  auto seconds_since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  if (ranks > 1) {
    const auto t_comm = std::chrono::steady_clock::now();
    double counts[2] = {double(r.tokens), double(r.input_tokens)};
    comm_->all_reduce_sum(counts, 2);
    r.tokens = int64_t(counts[0]), r.input_tokens = int64_t(counts[1]);
    r.comm_seconds += seconds_since(t_comm);
  }
  // A step with no target at all has zero gradients; scale 0 keeps them zero (no 1/0).
  const double grad_scale = r.tokens > 0 ? 1.0 / double(r.tokens) : 0.0;

  model_.zero_grad();
  // Data parallel over a host gradient buffer: each block's gradients are summed over the ranks
  // as soon as the last micro-batch's backward completes them, while the blocks below it run
  // their backward (every rank's backward calls the hook in the same block order).
  size_t flat_n = 0;
  float* flat = ranks > 1 ? model_.host_flat_gradients(&flat_n) : nullptr;
  std::vector<std::pair<size_t, size_t>> started;  // (first float, count) of each sum in flight
  double sums[2] = {0, 0};  // the objective (an MoE model's load-balancing term included), aux loss × tokens
  for (size_t m = 0; m < batches.size(); ++m) {
    const bool overlap = flat && m + 1 == batches.size();
    if (overlap)
      model_.set_gradients_ready_hook([&](const GradientsReady& g) {
        const auto t_comm = std::chrono::steady_clock::now();
        started.emplace_back(g.offset / sizeof(float), g.bytes / sizeof(float));
        comm_->start_all_reduce_sum(flat + started.back().first, started.back().second);
        r.comm_seconds += seconds_since(t_comm);
      });
    const LossSum s = model_.forward_backward(batches[m], grad_scale, dropout_seed(config_.seed, step_, global_index[m]));
    if (overlap) model_.set_gradients_ready_hook({});
    sums[0] += s.loss + s.aux_term;
    sums[1] += s.aux_loss * double(s.tokens);
  }
  if (ranks > 1) {
    const auto t_comm = std::chrono::steady_clock::now();
    if (flat) {
      comm_->wait_all();
      // Whatever no hook covered (none with the Llama engine) is summed now.
      std::sort(started.begin(), started.end());
      size_t at = 0;
      for (const auto& [first, count] : started) {
        if (first > at) comm_->all_reduce_sum(flat + at, first - at);
        at = std::max(at, first + count);
      }
      if (at < flat_n) comm_->all_reduce_sum(flat + at, flat_n - at);
    } else {
      all_reduce_gradients();
    }
    comm_->all_reduce_sum(sums, 2);
    r.comm_seconds += seconds_since(t_comm);
  }
  const double loss_sum = sums[0];
  r.loss = r.tokens > 0 ? loss_sum / double(r.tokens) : 0.0;
  r.aux_loss = r.tokens > 0 ? sums[1] / double(r.tokens) : 0.0;
  if (!std::isfinite(loss_sum)) r.loss = loss_sum;  // keep NaN/Inf visible even when tokens == 0

  const std::vector<Param> params = model_.parameters();
  r.lr = schedule_.lr_at(step_);
  Backend& be = model_.backend();
  if (!std::isfinite(loss_sum) || !grads_finite(params, &be)) {
    // Skip the update but still count the step: the schedule and the data position move on, so a
    // bad batch is not retried forever and the run stays aligned with its step budget. Grads are
    // cleared so nothing non-finite lingers in the buffers.
    r.skipped = true;
    r.grad_norm = grad_norm(params, &be);
    model_.zero_grad();
    ++nonfinite_total_, ++nonfinite_streak_;
  } else {
    r.grad_norm = clip_grad_norm(params, config_.max_grad_norm, &be);
    // Cross-entropy's gradient (softmax - one-hot) is never exactly 0 at a target; all of it 0
    // means the backward passed through an overflow that a norm zeroed.
    r.zero_grad = r.tokens > 0 && r.grad_norm == 0.0;
    nonfinite_streak_ = r.zero_grad ? nonfinite_streak_ + 1 : 0;
    optimizer_->step(params, r.lr);
    model_.parameters_updated();
  }
  ++step_;
  if (ranks > 1 && config_.check_replicas_every > 0 && step_ % config_.check_replicas_every == 0) check_replicas();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

void Trainer::all_reduce_gradients() {
  Backend& be = model_.backend();
  std::vector<float> host;
  for (const Param& p : model_.parameters()) {
    if (p.grad.dtype() != DType::F32)
      fail("train", "data-parallel training reduces f32 gradients; {} is {}", p.name, dtype_name(p.grad.dtype()));
    host.resize(size_t(p.grad.numel()));
    be.download(host.data(), p.grad);
    comm_->all_reduce_sum(host.data(), host.size());
    be.upload(p.grad, host.data());
  }
}

void Trainer::check_replicas() {
  // FNV-1a over every parameter's bytes; rank 0's hash is broadcast and each rank compares, then the
  // verdicts are summed so that every rank throws together (none is left waiting in a collective).
  Backend& be = model_.backend();
  uint64_t hash = fnv1a64(nullptr, 0);  // the offset basis
  std::vector<unsigned char> bytes;
  for (const Param& p : model_.parameters()) {
    bytes.resize(p.value.nbytes());
    be.download(bytes.data(), p.value);
    hash = fnv1a64(bytes.data(), bytes.size(), hash);
  }
  uint64_t reference = hash;
  comm_->broadcast(&reference, sizeof reference, 0);
  double mismatches = reference == hash ? 0.0 : 1.0;
  comm_->all_reduce_sum(&mismatches, 1);
  if (mismatches > 0)
    fail("train", "after step {} the parameters of {} of {} ranks differ from rank 0's (hash {:016x} here, {:016x} on "
                  "rank 0): the replicas diverged",
         step_, int64_t(mismatches), comm_->size(), hash, reference);
}

double Trainer::evaluate() {
  if (validation_.empty()) return std::numeric_limits<double>::quiet_NaN();
  LossSum total;
  const size_t mb = size_t(config_.micro_batch);
  for (size_t begin = 0; begin < validation_.size(); begin += mb) {
    const LossSum s = model_.evaluate(make_batch(validation_, begin, std::min(mb, validation_.size() - begin)));
    total.loss += s.loss;
    total.tokens += s.tokens;
  }
  return total.tokens ? total.mean() : std::numeric_limits<double>::quiet_NaN();
}

void Trainer::train(const std::function<void(const StepResult&)>& on_step,
                    const std::function<void(int64_t step, double val_loss)>& on_eval,
                    const std::function<bool()>& should_stop) {
  const bool saving = !config_.output_dir.empty();
  int64_t saved_at = -1;  // the step of the last checkpoint written by this call
  while (step_ < config_.max_steps) {
    if (should_stop && should_stop()) {
      if (saving && saved_at != step_) save_checkpoint();
      return;
    }
    const StepResult r = step();
    if (on_step) on_step(r);
    if (config_.max_consecutive_nonfinite > 0 && nonfinite_streak_ >= config_.max_consecutive_nonfinite) {
      const std::string last = saving ? latest_checkpoint(config_.output_dir) : "";
      fail("train",
           "steps {} to {} ({} in a row, key 'max_consecutive_nonfinite_steps') had a non-finite loss or "
           "gradient, or a gradient of exactly 0 (an overflow zeroed by a norm): the run diverged and was stopped "
           "(is learning_rate {} too high?); {}",
           step_ - nonfinite_streak_ + 1, step_, nonfinite_streak_, config_.lr,
           last.empty() ? std::string("no checkpoint was written") : "the last good checkpoint is " + last);
    }
    if (config_.eval_every > 0 && step_ % config_.eval_every == 0 && !validation_.empty()) {
      const double v = evaluate();
      if (on_eval) on_eval(step_, v);
    }
    // Not in the middle of a non-finite streak: the newest checkpoint stays the last good one.
    if (saving && config_.save_every > 0 && step_ % config_.save_every == 0 && nonfinite_streak_ == 0) {
      save_checkpoint();
      saved_at = step_;
    }
  }
  // The final state, unless nothing ran (a resume at max_steps has it already).
  if (saving && saved_at != step_ && step_ > 0) save_checkpoint();
}

}  // namespace qlora
