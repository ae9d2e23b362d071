// TrainModel: the Trainable face of the engine. See train_model.h.
#include "train/train_model.h"

#include "core/error.h"

namespace qlora {

namespace {

TrainModelOptions trainable(TrainModelOptions options) {
  if (options.frozen) fail("train", "a TrainModel trains: options.frozen must be false");
  return options;
}

}  // namespace

TrainModel::TrainModel(LlamaModelFile file, TrainModelOptions options)
    : model_(std::move(file), trainable(std::move(options))) {}

TrainModel::TrainModel(const ModelSource& source, TrainModelOptions options)
    : model_(source, trainable(std::move(options))) {}

LossSum TrainModel::forward_backward(const Batch& batch, double grad_scale, uint64_t dropout_seed) {
  return model_.forward_backward(batch, grad_scale, dropout_seed);
}
LossSum TrainModel::evaluate(const Batch& batch) { return model_.evaluate(batch); }
std::vector<Param> TrainModel::parameters() { return model_.parameters(); }
void TrainModel::zero_grad() { model_.zero_grad(); }
void TrainModel::parameters_updated() { model_.parameters_updated(); }
MemoryStats TrainModel::memory() const { return model_.memory(); }
Backend& TrainModel::backend() { return model_.backend(); }

float* TrainModel::host_flat_gradients(size_t* n) {
  const Tensor& g = model_.flat_gradients();
  // The CPU backend's buffers are host memory; a device's would need a staging copy per bucket.
  if (!g.defined() || g.dtype() != DType::F32 || model_.backend().name() != "cpu") {
    *n = 0;
    return nullptr;
  }
  *n = size_t(g.numel());
  return const_cast<float*>(g.data<float>());
}

}  // namespace qlora
