// Trainable: what the Trainer needs from a model: forward + backward on a micro-batch accumulating
// gradients, loss-only evaluation, the trainable parameters, memory figures and the backend they
// live on (LossSum and MemoryStats are the engine's, model/llama.h). TrainModel (the Llama engine)
// implements it; tests drive the Trainer with small models implementing it too.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "backend/backend.h"
#include "core/param.h"
#include "model/llama.h"
#include "train/batch.h"

namespace qlora {

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
  // Where the params and grads live and the Trainer's reductions and optimizer run.
  virtual Backend& backend() = 0;
  // Data parallel, overlapped with the backward: every gradient as one f32 buffer in host memory
  // (its length in floats in *n), and a hook the backward calls as each block's gradients
  // complete (model/llama.h GradientsReady; an empty function removes it). A model without them
  // (the defaults) has its gradients reduced per parameter after the backward.
  virtual float* host_flat_gradients(size_t* n) {
    *n = 0;
    return nullptr;
  }
  virtual void set_gradients_ready_hook(std::function<void(const GradientsReady&)>) {}
};

}  // namespace qlora
