// LlamaModel: construction on a backend, the public training and inference entry points, and PEFT
// adapters applied unmerged to an inference model (each adapted projection's Linear gets a frozen
// LoraAdapter, so the block code adds scale·(x·Aᵀ)·Bᵀ exactly as in training). The block code
// itself is in llama_blocks.cpp.
#include "model/llama.h"

#include <charconv>
#include <cstring>
#include <string_view>

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

// A PEFT key "base_model.model.model.layers.{i}.{module}.lora_{A|B}.weight" split into layer,
// projection index and which factor; throws naming the key when it is anything else.
struct LoraKey {
  int64_t layer = -1;
  int index = -1;
  bool is_a = false;
};

LoraKey parse_lora_key(const std::string& key, int64_t n_layers) {
  std::string_view k = key;
  auto bad = [&](const std::string& why) -> LoraKey {
    fail("adapter", "tensor {}: {}; expected base_model.model.model.layers.<i>.<self_attn|mlp>.<proj>.lora_<A|B>.weight",
         key, why);
  };
  constexpr std::string_view kPrefix = "base_model.model.model.layers.";
  if (!k.starts_with(kPrefix)) return bad("not a decoder-layer LoRA weight (only " + projection_list() + " are supported)");
  k.remove_prefix(kPrefix.size());
  LoraKey out;
  const auto [end, ec] = std::from_chars(k.data(), k.data() + k.size(), out.layer);
  if (ec != std::errc() || end == k.data() || *end != '.') return bad("no layer index");
  k.remove_prefix(size_t(end - k.data()) + 1);
  if (out.layer < 0 || out.layer >= n_layers)
    fail("adapter", "tensor {}: layer {} out of range; the model has {} layers", key, out.layer, n_layers);
  if (k.ends_with(".lora_A.weight")) {
    out.is_a = true;
    k.remove_suffix(std::string_view(".lora_A.weight").size());
  } else if (k.ends_with(".lora_B.weight")) {
    k.remove_suffix(std::string_view(".lora_B.weight").size());
  } else {
    return bad("not a lora_A/lora_B weight");
  }
  for (int i = 0; i < kProjCount; ++i)
    if (k == projection_path(i)) out.index = i;
  if (out.index < 0) return bad(fmt::format("unknown module '{}'", k));
  return out;
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
    Tensor a, b;
    std::string key_a, key_b;
  };
  std::vector<std::vector<Pair>> pairs(size_t(c.num_hidden_layers), std::vector<Pair>(kProjCount));
  for (const auto& [key, tensor] : adapter.tensors) {
    const LoraKey k = parse_lora_key(key, c.num_hidden_layers);
    if (c.moe_layer(k.layer) && k.index >= kProjGate)
      fail("adapter", "tensor {}: layer {}'s MLP is a mixture of experts; it has no dense {}", key, k.layer,
           projection_name(k.index));
    const auto [out, in] = c.projection_shape(k.index);
    if (tensor.ndim() != 2 || tensor.dtype() != DType::F32)
      fail("adapter", "tensor {}: expected a 2-D f32 tensor, got {} {}", key, dtype_name(tensor.dtype()),
           shape_str(tensor.shape()));
    Pair& p = pairs[size_t(k.layer)][size_t(k.index)];
    if (k.is_a) {
      if (tensor.dim(1) != in)
        fail("adapter", "tensor {}: shape {}; expected (R, {}) for this model", key, shape_str(tensor.shape()), in);
      p.a = tensor, p.key_a = key;
    } else {
      if (tensor.dim(0) != out)
        fail("adapter", "tensor {}: shape {}; expected ({}, R) for this model", key, shape_str(tensor.shape()), out);
      p.b = tensor, p.key_b = key;
    }
  }
  bool any = false;
  for (const auto& layer : pairs)
    for (const Pair& p : layer) {
      if (!p.a.defined() && !p.b.defined()) continue;
      const std::string& named = p.a.defined() ? p.key_a : p.key_b;
      if (!p.a.defined() || !p.b.defined())
        fail("adapter", "tensor {} has no {} partner", named, p.a.defined() ? "lora_B" : "lora_A");
      if (p.a.dim(0) != p.b.dim(1))
        fail("adapter", "tensor {}: rank {} but its lora_B has rank {}", named, p.a.dim(0), p.b.dim(1));
      any = true;
    }
  if (!any) fail("adapter", "adapter holds no LoRA weights");

  clear_adapter();
  const DType dtype = m.options.compute == DType::F64 ? DType::F64 : DType::F32;
  const double scale = adapter.config.scale();
  for (size_t l = 0; l < pairs.size(); ++l)
    for (int p = 0; p < kProjCount; ++p) {
      const Pair& pair = pairs[l][size_t(p)];
      if (!pair.a.defined()) continue;
      auto lora = std::make_unique<LoraAdapter>();
      lora->A = m.backend->to_device(pair.a.to(dtype));
      lora->B = m.backend->to_device(pair.b.to(dtype));
      lora->scale = scale;  // no dropout: inference
      m.w.layers[l].linears[size_t(p)].lora = std::move(lora);
    }
}

void LlamaModel::clear_adapter() {
  if (!impl_->options.frozen) return;  // a training model's adapters are its parameters
  for (ModelLayer& layer : impl_->w.layers)
    for (Linear& lin : layer.linears) lin.lora.reset();
}

bool LlamaModel::has_adapter() const {
  if (!impl_->options.frozen) return false;
  for (const ModelLayer& layer : impl_->w.layers)
    for (const Linear& lin : layer.linears)
      if (lin.lora) return true;
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
