// TrainModel: a LlamaModel (model/llama.h, the engine) set up for training — full fine-tuning,
// LoRA over a dense (f32/bf16) base, or QLoRA over a frozen 4-bit (NF4, double-quantized) base —
// as the Trainer sees it (train/trainable.h). The forward and backward per block, checkpointing
// and the flat parameter buffers are the engine's; this adapter only forwards.
// Tested in tests/unit/test_train_model.cpp, tests/grad/test_model_grads.cpp and
// tests/parity/test_train_parity.cpp.
#pragma once
#include <vector>

#include "model/llama.h"
#include "train/trainable.h"

namespace qlora {

using TrainModelOptions = ModelOptions;

class TrainModel final : public Trainable {
 public:
  TrainModel(LlamaModelFile file, TrainModelOptions options);
  // Streams the weights from the source one tensor at a time (model/model_source.h).
  TrainModel(const ModelSource& source, TrainModelOptions options);

  LossSum forward_backward(const Batch& batch, double grad_scale, uint64_t dropout_seed) override;
  LossSum evaluate(const Batch& batch) override;
  std::vector<Param> parameters() override;
  void zero_grad() override;
  void parameters_updated() override;
  MemoryStats memory() const override;
  Backend& backend() override;
  float* host_flat_gradients(size_t* n) override;
  void set_gradients_ready_hook(std::function<void(const GradientsReady&)> hook) override {
    model_.set_gradients_ready_hook(std::move(hook));
  }

  // Logits (B*T, V) in f32 for a batch (adapters applied unmerged, no dropout).
  Tensor logits(const Batch& batch) { return model_.logits(batch); }
  const LlamaConfig& config() const { return model_.config(); }
  const TrainModelOptions& options() const { return model_.options(); }
  // The decoder's projections of layer `layer` in the order q, k, v, o, gate, up, down.
  std::vector<const Linear*> layer_linears(int64_t layer) const { return model_.layer_linears(layer); }
  LlamaModel& model() { return model_; }
  const LlamaModel& model() const { return model_; }

 private:
  LlamaModel model_;
};

}  // namespace qlora
