// LlamaModel: construction on a backend, the public training and inference entry points, and PEFT
// adapters applied unmerged to an inference model (each adapted Linear, a projection or an MoE
// router or expert, gets a frozen LoraAdapter, so the block code adds scale·(x·Aᵀ)·Bᵀ exactly as in
// training). The block code itself is in llama_blocks.cpp.
#include "model/llama.h"

#include <map>
#include <optional>
#include <utility>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "model/llama_engine.h"
#include "model/rope_scaling.h"

namespace qlora {

TrainMethod train_method_from_name(const std::string& name) {
  if (name == "full") return TrainMethod::Full;
  if (name == "lora") return TrainMethod::Lora;
  if (name == "qlora") return TrainMethod::Qlora;
  fail("train", "unknown method '{}'; expected full, lora or qlora", name);
}

std::string train_method_name(TrainMethod method) {
  switch (method) {
    case TrainMethod::Full: return "full";
    case TrainMethod::Lora: return "lora";
    case TrainMethod::Qlora: return "qlora";
  }
  return "?";
}

ModelOptions inference_options(const ForwardOptions& forward) {
  if (forward.compute != DType::F32 && forward.compute != DType::BF16)
    fail("model", "compute dtype {} not supported; expected f32 or bf16", dtype_name(forward.compute));
  ModelOptions o;
  o.frozen = true;
  o.method = forward.quantize.enabled ? TrainMethod::Qlora : TrainMethod::Lora;
  o.compute = forward.compute;
  o.quantize = forward.quantize;
  o.backend = forward.backend;
  return o;
}

KvCache::KvCache(const LlamaConfig& config, int64_t max_seq)
    : max_seq_(max_seq), layers_(config.num_hidden_layers), kv_dim_(config.kv_dim()) {
  if (max_seq < 1) fail("forward", "a KV cache needs room for at least 1 position; got {}", max_seq);
}

namespace {

// The Linear of `layer` that `m` names (model/weights.h find_layer_module).
Linear& module_linear(ModelLayer& layer, const LayerModule& m) {
  switch (m.kind) {
    case LayerModule::Kind::Projection: return layer.linears[size_t(m.projection)];
    case LayerModule::Kind::Router: return layer.router;
    case LayerModule::Kind::Expert: return layer.experts[size_t(m.expert)][size_t(m.part)];
  }
  fail("adapter", "unknown module kind");
}

}  // namespace

LlamaModel::LlamaModel(LlamaModelFile file, ModelOptions options)
    : LlamaModel(ModelSource::from_file(std::move(file)), std::move(options)) {}

LlamaModel::LlamaModel(const ModelSource& source, ModelOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  if (!options.backend) options.backend = make_cpu_backend();
  m.config = source.config();
  m.options = options;
  m.backend = options.backend;
  if (options.checkpoint_every < 0)
    fail("train", "checkpoint_every must be >= 0 (0 = off, k = recompute every k-th block); got {}",
         options.checkpoint_every);
  const std::vector<float> inv_freq = rope_inverse_frequencies(source.config());
  m.inv_freq = m.backend->to_device(Tensor::from_vector(inv_freq, {int64_t(inv_freq.size())}));
  m.w = build_model_weights(*m.backend, source, options);
  if (options.moe_dispatch == MoeDispatch::PerToken)
    for (const ModelLayer& layer : m.w.layers)
      for (const auto& expert : layer.experts)
        for (const Linear& lin : expert)
          if (lin.lora)
            fail("train", "per-token MoE dispatch takes no LoRA on the experts ({}); target attention or the router",
                 lin.name);
  m.stats.weights = m.w.weight_bytes;
  for (const Param& p : m.w.params) {
    m.stats.gradients += p.grad.nbytes();
    // Full fine-tuning in f32/f64 trains the weights in place: no separate master copy.
    const bool in_place = options.method == TrainMethod::Full && options.compute != DType::BF16;
    if (!in_place) m.stats.trainable += p.value.nbytes();
  }
  m.group_of_block.assign(size_t(m.config.num_hidden_layers + 2), -1);
  for (size_t g = 0; g < m.w.groups.size(); ++g) m.group_of_block[size_t(m.w.groups[g].block + 1)] = int(g);
}

LlamaModel::LlamaModel(LlamaModelFile file, ForwardOptions options)
    : LlamaModel(std::move(file), inference_options(options)) {}

LlamaModel::LlamaModel(const ModelSource& source, ForwardOptions options)
    : LlamaModel(source, inference_options(options)) {}

LlamaModel::~LlamaModel() = default;
LlamaModel::LlamaModel(LlamaModel&&) noexcept = default;
LlamaModel& LlamaModel::operator=(LlamaModel&&) noexcept = default;

LossSum LlamaModel::forward_backward(const Batch& batch, double grad_scale, uint64_t dropout_seed) {
  return impl_->dispatch([&](auto scalar) {
    using T = decltype(scalar);
    return impl_->run<T>(batch, Impl::Mode::Train, grad_scale, dropout_seed, nullptr);
  });
}

LossSum LlamaModel::evaluate(const Batch& batch) {
  return impl_->dispatch([&](auto scalar) {
    using T = decltype(scalar);
    return impl_->run<T>(batch, Impl::Mode::Evaluate, 0.0, 0, nullptr);
  });
}

Tensor LlamaModel::logits(const Batch& batch) {
  Tensor out;
  impl_->dispatch([&](auto scalar) {
    using T = decltype(scalar);
    return impl_->run<T>(batch, Impl::Mode::Logits, 0.0, 0, &out);
  });
  return out;
}

std::vector<Param> LlamaModel::parameters() const { return impl_->w.params; }
const Tensor& LlamaModel::flat_parameters() const { return impl_->w.flat_values; }
const Tensor& LlamaModel::flat_gradients() const { return impl_->w.flat_grads; }

void LlamaModel::zero_grad() {
  const Tensor& g = impl_->w.flat_grads;
  if (g.defined()) impl_->backend->memset(g.raw(), 0, g.nbytes());
}

void LlamaModel::parameters_updated() {
  for (auto& [master, compute] : impl_->w.refreshes)
    impl_->backend->convert_f32_to_bf16(master.data<float>(), compute.data<uint16_t>(), master.numel());
}

MemoryStats LlamaModel::memory() const { return impl_->stats; }

void LlamaModel::set_gradients_ready_hook(std::function<void(const GradientsReady&)> hook) {
  impl_->hook = std::move(hook);
}

Tensor LlamaModel::forward(KvCache& cache, const int32_t* ids, int64_t n, bool all_logits) const {
  return impl_->dispatch([&](auto scalar) {
    using T = decltype(scalar);
    return impl_->infer<T>(cache, ids, n, all_logits);
  });
}

Tensor LlamaModel::forward_sequence(const std::vector<int32_t>& ids) const {
  KvCache cache(impl_->config, std::max<int64_t>(1, int64_t(ids.size())));
  return forward(cache, ids.data(), int64_t(ids.size()), true);
}

void LlamaModel::set_adapter(const PeftAdapter& adapter) {
  Impl& m = *impl_;
  const LlamaConfig& c = m.config;
  if (!m.options.frozen)
    fail("adapter", "set_adapter: this model trains its own parameters (method {}); load the PEFT adapter into an "
                    "inference model",
         train_method_name(m.options.method));
  // Built aside and swapped in, so a bad adapter leaves the model as it was.
  struct Pair {
    LayerModule module;
    Tensor a, b;
    std::string key_a, key_b;
  };
  std::map<std::pair<int64_t, std::string>, Pair> pairs;  // (layer, module path), in key order
  for (const auto& [key, tensor] : adapter.tensors) {
    const PeftLoraKey k = parse_peft_lora_key(key, "adapter");
    if (k.layer >= c.num_hidden_layers)
      fail("adapter", "tensor {}: layer {} out of range; the model has {} layers", key, k.layer, c.num_hidden_layers);
    const std::optional<LayerModule> module = find_layer_module(c, k.layer, k.module);
    if (!module) {
      if (c.moe_layer(k.layer) && projection_index(k.module.substr(k.module.find('.') + 1)) >= kProjGate)
        fail("adapter", "tensor {}: layer {}'s MLP is a mixture of experts; it has no dense {}", key, k.layer, k.module);
      fail("adapter", "tensor {}: unknown module '{}' for layer {} of this {} model", key, k.module, k.layer,
           c.architecture);
    }
    if (tensor.ndim() != 2 || tensor.dtype() != DType::F32)
      fail("adapter", "tensor {}: expected a 2-D f32 tensor, got {} {}", key, dtype_name(tensor.dtype()),
           shape_str(tensor.shape()));
    Pair& p = pairs[{k.layer, k.module}];
    p.module = *module;
    if (k.is_a) {
      if (tensor.dim(1) != module->in)
        fail("adapter", "tensor {}: shape {}; expected (R, {}) for this model", key, shape_str(tensor.shape()),
             module->in);
      p.a = tensor, p.key_a = key;
    } else {
      if (tensor.dim(0) != module->out)
        fail("adapter", "tensor {}: shape {}; expected ({}, R) for this model", key, shape_str(tensor.shape()),
             module->out);
      p.b = tensor, p.key_b = key;
    }
  }
  for (const auto& [where, p] : pairs) {
    const std::string& named = p.a.defined() ? p.key_a : p.key_b;
    if (!p.a.defined() || !p.b.defined())
      fail("adapter", "tensor {} has no {} partner", named, p.a.defined() ? "lora_B" : "lora_A");
    if (p.a.dim(0) != p.b.dim(1))
      fail("adapter", "tensor {}: rank {} but its lora_B has rank {}", named, p.a.dim(0), p.b.dim(1));
  }
  if (pairs.empty()) fail("adapter", "adapter holds no LoRA weights");

  clear_adapter();
  const DType dtype = m.options.compute == DType::F64 ? DType::F64 : DType::F32;
  const double scale = adapter.config.scale();
  for (const auto& [where, pair] : pairs) {
    auto lora = std::make_unique<LoraAdapter>();
    lora->A = m.backend->to_device(pair.a.to(dtype));
    lora->B = m.backend->to_device(pair.b.to(dtype));
    lora->scale = scale;  // no dropout: inference
    module_linear(m.w.layers[size_t(where.first)], pair.module).lora = std::move(lora);
  }
}

void LlamaModel::clear_adapter() {
  if (!impl_->options.frozen) return;  // a training model's adapters are its parameters
  for (ModelLayer& layer : impl_->w.layers) {
    for (Linear& lin : layer.linears) lin.lora.reset();
    layer.router.lora.reset();
    for (auto& expert : layer.experts)
      for (Linear& lin : expert) lin.lora.reset();
  }
}

bool LlamaModel::has_adapter() const {
  if (!impl_->options.frozen) return false;
  for (int64_t l = 0; l < int64_t(impl_->w.layers.size()); ++l)
    for (const Linear* lin : layer_linears(l))
      if (lin->lora) return true;
  return false;
}

const LlamaConfig& LlamaModel::config() const { return impl_->config; }
const ModelOptions& LlamaModel::options() const { return impl_->options; }
Backend& LlamaModel::backend() const { return *impl_->backend; }

std::vector<const Linear*> LlamaModel::layer_linears(int64_t layer) const {
  if (layer < 0 || layer >= int64_t(impl_->w.layers.size()))
    fail("train", "layer {} out of range [0, {})", layer, impl_->w.layers.size());
  const ModelLayer& l = impl_->w.layers[size_t(layer)];
  std::vector<const Linear*> out;
  for (const Linear& lin : l.linears)
    if (!lin.name.empty()) out.push_back(&lin);  // a sparse layer has no dense gate/up/down
  if (!l.router.name.empty()) out.push_back(&l.router);
  for (const auto& expert : l.experts)
    for (const Linear& lin : expert) out.push_back(&lin);
  return out;
}

}  // namespace qlora
