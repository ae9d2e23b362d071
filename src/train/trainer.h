// Trainer: the loop around a Trainable. One optimizer step = grad_accum micro-batches of
// micro_batch sequences each (losses normalised by the target tokens of the whole step), NaN/Inf
// guard (a step with a non-finite loss or gradient is skipped: no update, reported), global-norm
// clipping, the LR schedule, the optimizer (AdamW / 8-bit, heap or paged state), periodic
// evaluation and atomic checkpoints. Data order: the training sequences are shuffled once per epoch
// with seed + epoch; the position (epoch, index) is part of the checkpoint, and dropout seeds derive
// from (seed, step, micro-batch), so a resumed run continues bit-identically.
// Tested in tests/unit/test_trainer.cpp (toy Trainable) and tests/parity/test_train_parity.cpp.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/packing.h"
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
};

struct StepResult {
  int64_t step = 0;         // 1-based number of this optimizer step
  double loss = 0;          // mean over the step's target tokens
  int64_t tokens = 0;       // target tokens in the step
  int64_t input_tokens = 0; // all positions fed (B * T * micro-batches)
  double grad_norm = 0;     // before clipping
  double lr = 0;
  bool skipped = false;     // non-finite loss or gradient: no update
  double seconds = 0;
};

struct DataPosition {
  int64_t epoch = 0;
  int64_t index = 0;  // next sequence within the epoch's order
};

class Trainer {
 public:
  Trainer(Trainable& model, std::vector<TrainSequence> train, std::vector<TrainSequence> validation,
          TrainerConfig config);
  ~Trainer();

  // One optimizer step. Throws Error when there is no training data.
  StepResult step();
  // Runs steps until max_steps (evaluating and saving on the configured intervals), calling
  // on_step after each and on_eval after each evaluation. should_stop is polled between steps
  // (Ctrl-C): when it returns true a checkpoint is saved and train() returns.
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

  int64_t step_count() const { return step_; }
  const DataPosition& data_position() const { return position_; }
  const TrainerConfig& config() const { return config_; }
  Optimizer& optimizer() { return *optimizer_; }
  Trainable& model() { return model_; }

 private:
  std::vector<size_t> next_micro_batch_indices();

  Trainable& model_;
  std::vector<TrainSequence> train_, validation_;
  TrainerConfig config_;
  Schedule schedule_;
  std::unique_ptr<Optimizer> optimizer_;
  int64_t step_ = 0;
  DataPosition position_;
  std::vector<size_t> order_;  // the current epoch's order
};

// Optimizer steps for `epochs` passes over `sequences` at `per_step` sequences a step (at least 1).
int64_t steps_for_epochs(double epochs, size_t sequences, int64_t per_step);

// The newest output_dir/checkpoint-<step> directory, or "" when there is none.
std::string latest_checkpoint(const std::string& output_dir);

}  // namespace qlora
