// Trainer: the loop around a Trainable. One optimizer step = grad_accum micro-batches of
// micro_batch sequences each (losses normalised by the target tokens of the whole step), NaN/Inf
// guard (a step with a non-finite loss or gradient is skipped: no update, reported), global-norm
// clipping, the LR schedule, the optimizer (AdamW / 8-bit, heap or paged state), periodic
// evaluation and atomic checkpoints. Data order: the training sequences are shuffled once per epoch
// with seed + epoch; the position (epoch, index) is part of the checkpoint, and dropout seeds derive
// from (seed, step, micro-batch), so a resumed run continues bit-identically.
// Data parallel (a Communicator of N ranks): a step is N * grad_accum micro-batches, drawn in the
// one global order every rank follows; rank r computes the micro-batches r, r + N, ... with their
// global dropout seeds, the gradients and loss sums are all-reduced once per step (block by block
// during the last micro-batch's backward where the model has a host gradient buffer), and clipping,
// the NaN guard and the update then see what one process accumulating all of them would. Rank 0
// alone writes checkpoints; every `check_replicas_every` steps the ranks compare a hash of their
// parameters and all throw Error on a mismatch.
// Tested in tests/unit/test_trainer.cpp (toy Trainable) and tests/parity/test_train_parity.cpp.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/packing.h"
#include "dist/communicator.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "train/trainable.h"

namespace qlora {

struct TrainerConfig {
  int64_t micro_batch = 1;
  int64_t grad_accum = 1;
  int64_t max_steps = 100;        // optimizer steps
  double lr = 2e-4;
  ScheduleKind schedule = ScheduleKind::Constant;
  int64_t warmup_steps = 0;
  double max_grad_norm = 1.0;     // <= 0: no clipping
  OptimizerKind optimizer = OptimizerKind::AdamW;
  AdamWConfig adamw;
  bool paged = false;             // optimizer state in a PagedStateStore
  uint64_t seed = 0;
  bool shuffle = true;
  int64_t eval_every = 0;         // steps; 0 = never during training
  int64_t save_every = 0;         // steps; 0 = never during training
  std::string output_dir;         // checkpoints go to output_dir/checkpoint-<step>
  int64_t save_total_limit = 0;   // keep only the newest K checkpoints in output_dir; 0 = keep all
  // This many skipped (non-finite) or zero-gradient steps in a row stop train() with an Error: a
  // run that diverged does not go on to its end silently. 0 = never stop.
  int64_t max_consecutive_nonfinite = 10;
  // Data parallel: steps between checks that every rank holds the same parameters (0 = never).
  int64_t check_replicas_every = 10;
};

struct StepResult {
  int64_t step = 0;         // 1-based number of this optimizer step
  double loss = 0;          // mean over the step's target tokens (an MoE model's aux term included)
  double aux_loss = 0;      // MoE with output_router_logits: the load-balancing loss, micro-batches
                            // weighed by their targets as in `loss`; 0 otherwise
  int64_t tokens = 0;       // target tokens in the step
  int64_t input_tokens = 0; // all positions fed (B * T * micro-batches)
  double grad_norm = 0;     // before clipping
  double lr = 0;
  bool skipped = false;     // non-finite loss or gradient: no update
  // Target tokens but a gradient of exactly 0: activations overflowed and a norm turned the
  // infinities into zeros (a diverged run that no longer shows a NaN). Updated as usual.
  bool zero_grad = false;
  double seconds = 0;
  double comm_seconds = 0;  // data parallel: the part of `seconds` spent in all-reduces
};

struct DataPosition {
  int64_t epoch = 0;
  int64_t index = 0;  // next sequence within the epoch's order
};

class Trainer {
 public:
  // `comm` null: one process.
  Trainer(Trainable& model, std::vector<TrainSequence> train, std::vector<TrainSequence> validation,
          TrainerConfig config, std::shared_ptr<Communicator> comm = nullptr);
  ~Trainer();

  // One optimizer step. Throws Error when there is no training data.
  StepResult step();
  // Runs steps until max_steps (evaluating and saving on the configured intervals), calling
  // on_step after each and on_eval after each evaluation. should_stop is polled between steps
  // (Ctrl-C): when it returns true a checkpoint is saved and train() returns.
  // While steps are being skipped as non-finite no checkpoint is written, and after
  // max_consecutive_nonfinite of them in a row train() throws Error naming the steps and the last
  // checkpoint on disk, which is left as it was (nothing of the diverged state is saved).
  void train(const std::function<void(const StepResult&)>& on_step = {},
             const std::function<void(int64_t step, double val_loss)>& on_eval = {},
             const std::function<bool()>& should_stop = {});
  // Mean loss over the validation sequences (micro_batch at a time). 0 sequences -> NaN.
  double evaluate();

  // Writes output_dir/checkpoint-<step> atomically (temp dir, fsync, rename): trainable params
  // (model.safetensors, names as Param::name), optimizer state (optimizer.safetensors) and
  // trainer_state.json (step, data position, seed, config). Returns the directory.
  std::string save_checkpoint();
  std::string save_checkpoint(const std::string& dir);
  // Restores params, optimizer state, step and data position from a checkpoint directory.
  // Throws Error naming the file when it is missing, truncated or belongs to other params.
  void resume(const std::string& checkpoint_dir);
  // Resumes from the newest complete checkpoint in output_dir that loads; a newer one that does
  // not is skipped with a warning naming it, the reason and the one used instead. Returns the
  // directory used, "" when output_dir holds no checkpoint; throws when none loads.
  std::string resume_latest(const std::string& output_dir, std::vector<std::string>* warnings);

  int64_t step_count() const { return step_; }
  // Non-finite (skipped) steps taken by this Trainer in all; diverged (skipped or zero-gradient)
  // steps in a row up to now.
  int64_t nonfinite_steps() const { return nonfinite_total_; }
  int64_t nonfinite_streak() const { return nonfinite_streak_; }
  const DataPosition& data_position() const { return position_; }
  const TrainerConfig& config() const { return config_; }
  Optimizer& optimizer() { return *optimizer_; }
  Trainable& model() { return model_; }
  Communicator& communicator() { return *comm_; }

 private:
  std::vector<size_t> next_micro_batch_indices();
  // Sums the trainable gradients over the ranks, one all-reduce per parameter (models without a
  // host gradient buffer; Trainable::host_flat_gradients).
  void all_reduce_gradients();
  // Throws Error on every rank when the ranks' parameters differ.
  void check_replicas();

  Trainable& model_;
  std::vector<TrainSequence> train_, validation_;
  TrainerConfig config_;
  Schedule schedule_;
  std::unique_ptr<Optimizer> optimizer_;
  int64_t step_ = 0;
  DataPosition position_;
  std::vector<size_t> order_;  // the current epoch's order
  int64_t nonfinite_total_ = 0, nonfinite_streak_ = 0;
  std::shared_ptr<Communicator> comm_;
};

// Optimizer steps for `epochs` passes over `sequences` at `per_step` sequences a step (at least 1).
int64_t steps_for_epochs(double epochs, size_t sequences, int64_t per_step);

// The newest output_dir/checkpoint-<step> directory, or "" when there is none.
std::string latest_checkpoint(const std::string& output_dir);
// Every complete output_dir/checkpoint-<step> directory, newest first. Temp ("<dir>.tmp-<pid>"),
// displaced ("<dir>.old-<pid>") and half-deleted ("<dir>.deleting-<pid>") folders never count.
std::vector<std::string> list_checkpoints(const std::string& output_dir);
// What a killed run leaves in output_dir (and its adapter/, model/, token_cache/ folders): temp
// files "<file>.tmp.<pid>" and folders "<dir>.tmp-<pid>" are removed, as are "<dir>.deleting-<pid>"
// folders; a "checkpoint-<n>.old-<pid>" is renamed back to checkpoint-<n> when the kill came
// between the two renames of a replacement (no checkpoint-<n> left), else removed. Returns a line
// for each thing done.
std::vector<std::string> remove_stale_outputs(const std::string& output_dir);
// Deletes all but the newest `keep` complete checkpoints of output_dir (keep <= 0: none deleted).
// Each goes by rename to "<dir>.deleting-<pid>" first, so a kill mid-delete never leaves a
// half-deleted folder under a checkpoint's name.
void prune_checkpoints(const std::string& output_dir, int64_t keep);

}  // namespace qlora
