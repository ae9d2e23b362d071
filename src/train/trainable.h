// Trainable: what the Trainer needs from a model: forward + backward on a micro-batch accumulating
// gradients, loss-only evaluation, the trainable parameters, and memory figures. TrainModel (the
// Llama engine) implements it; tests drive the Trainer with small models implementing it too.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "optim/param.h"
#include "train/batch.h"

namespace qlora {

struct LossSum {
  double loss = 0;     // summed cross-entropy over rows with a target
  int64_t tokens = 0;  // rows with a target
  double mean() const { return tokens ? loss / double(tokens) : 0.0; }
};

struct MemoryStats {
  size_t weights = 0;             // frozen and trainable weights as stored (4-bit codes + constants for QLoRA)
  size_t trainable = 0;           // master copies of trainable params
  size_t gradients = 0;           // gradient buffers
  size_t activations_peak = 0;    // peak bytes of activations kept for the backward + working buffers
  size_t activations_saved_peak = 0;  // of which: kept between forward and backward
};

class Trainable {
 public:
  virtual ~Trainable() = default;
  // Forward and backward of one micro-batch. Gradients accumulate (+=) scaled by grad_scale, so
  // with grad_scale = 1 / (target tokens of the whole step) micro-batches add up to the mean loss
  // of the step. dropout_seed makes dropout reproducible. Returns the summed (unscaled) loss.
  virtual LossSum forward_backward(const Batch& batch, double grad_scale, uint64_t dropout_seed) = 0;
  // Loss only, no dropout, no gradients.
  virtual LossSum evaluate(const Batch& batch) = 0;
  // Trainable parameters: f32 masters and grads (stable across calls: same order, same storage).
  virtual std::vector<Param> parameters() = 0;
  virtual void zero_grad() = 0;
  // Called after the optimizer changed the masters (e.g. to refresh bf16 compute copies).
  virtual void parameters_updated() = 0;
  virtual MemoryStats memory() const = 0;
};

}  // namespace qlora
