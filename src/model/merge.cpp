// LoRA merge into dense weights. See merge.h. Legend: O out features, K in features, R rank.
#include "model/merge.h"

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "lora/lora_linear.h"

namespace qlora {
namespace {

constexpr std::string_view kKeyPrefix = "base_model.model.model.layers.";

// The (out, in) of a module path ("self_attn.q_proj"), or {0, 0} when a layer has no such module.
std::pair<int64_t, int64_t> module_shape(const LlamaConfig& c, const std::string& module) {
  for (int p = 0; p < kProjCount; ++p)
    if (module == projection_path(p)) return c.projection_shape(p);
  return {0, 0};
}

// base + scale·B·A in f32 (merged_weight), for a base weight of any dtype.
Tensor merge_one(Backend& cpu, const std::string& name, const Tensor& base, const Tensor& A, const Tensor& B,
                 double scale) {
  Linear linear;
  linear.name = name;
  linear.out = base.dim(0), linear.in = base.dim(1);
  linear.weight = base;
  linear.lora = std::make_unique<LoraAdapter>();
  linear.lora->A = A, linear.lora->B = B, linear.lora->scale = scale;
  return merged_weight(cpu, linear);  // (O, K) f32, a new tensor
}

}  // namespace

std::map<std::string, std::pair<Tensor, Tensor>> adapter_modules(const PeftAdapter& adapter, const LlamaConfig& config) {
  std::map<std::string, std::pair<Tensor, Tensor>> out;
  for (const auto& [key, tensor] : adapter.tensors) {
    // key: base_model.model.model.layers.{l}.{self_attn|mlp}.{x}_proj.lora_{A|B}.weight
    const bool is_a = key.size() > 14 && key.compare(key.size() - 14, 14, ".lora_A.weight") == 0;
    const bool is_b = key.size() > 14 && key.compare(key.size() - 14, 14, ".lora_B.weight") == 0;
    if (key.rfind(kKeyPrefix, 0) != 0 || (!is_a && !is_b))
      fail("merge", "adapter key '{}' is not a decoder-layer LoRA weight (base_model.model.model.layers.N.*.lora_A/B.weight)",
           key);
    const std::string rest = key.substr(kKeyPrefix.size(), key.size() - kKeyPrefix.size() - 14);  // "{l}.self_attn.q_proj"
    const size_t dot = rest.find('.');
    int64_t layer = -1;
    try {
      size_t used = 0;
      layer = std::stoll(rest.substr(0, dot), &used);
      if (used != dot) layer = -1;
    } catch (const std::exception&) {
      layer = -1;
    }
    if (dot == std::string::npos || layer < 0 || layer >= config.num_hidden_layers)
      fail("merge", "adapter key '{}' names layer '{}'; the model has layers 0..{}", key, rest.substr(0, dot),
           config.num_hidden_layers - 1);
    const std::string module = rest.substr(dot + 1);
    const auto [O, K] = module_shape(config, module);
    if (O == 0) fail("merge", "adapter key '{}' names module '{}', which a Llama layer does not have", key, module);
    const std::string module_name = "model.layers." + rest;
    const std::string weight = module_name + ".weight";
    if (out.count(weight)) continue;

    const auto [A, B] = adapter.module(module_name);  // A (R, K), B (O, R)
    if (!A.defined() || !B.defined())
      fail("merge", "adapter module '{}' lacks its lora_{}", module_name, A.defined() ? "B" : "A");
    if (A.ndim() != 2 || B.ndim() != 2 || A.dim(1) != K || B.dim(0) != O || B.dim(1) != A.dim(0))
      fail("merge", "adapter module '{}': lora_A {} and lora_B {} do not fit the weight ({}, {}) (expected A (R, {}) "
                    "and B ({}, R))",
           module_name, shape_str(A.shape()), shape_str(B.shape()), O, K, K, O);
    out.emplace(weight, std::make_pair(A, B));
  }
  return out;
}

void merge_adapter(LlamaWeights& weights, const LlamaConfig& config, const PeftAdapter& adapter) {
  const std::shared_ptr<Backend> cpu = make_cpu_backend();  // the weights are host tensors
  for (const auto& [name, ab] : adapter_modules(adapter, config)) {
    Tensor* w = weights.find(name);
    QLORA_ASSERT(w && w->defined(), "no weight {}", name);
    const Tensor merged = merge_one(*cpu, name, *w, ab.first, ab.second, adapter.config.scale());
    // Replace (not write through): the tensor may view a read-only mapping or share storage.
    *w = w->dtype() == DType::F32 ? merged : merged.to(w->dtype());
  }
}

ModelSource merged_source(const ModelSource& base, const PeftAdapter& adapter) {
  auto modules = std::make_shared<const std::map<std::string, std::pair<Tensor, Tensor>>>(
      adapter_modules(adapter, base.config()));
  const std::shared_ptr<Backend> cpu = make_cpu_backend();
  const double scale = adapter.config.scale();
  TensorLookup lookup = [base, modules, cpu, scale](const std::string& name) -> std::optional<SourceTensor> {
    SourceTensor t;
    t.shape = base.expected_shape(name);
    t.file = base.path();
    t.name_in_file = name;
    t.release = [base, name] { base.release(name); };
    const auto it = modules->find(name);
    if (it == modules->end()) {
      t.stored_type = base.stored_type(name);
      t.load = [base, name] { return base.load(name); };
    } else {
      t.stored_type = "f32";  // merged
      const Tensor A = it->second.first, B = it->second.second;
      t.load = [base, cpu, name, A, B, scale] { return merge_one(*cpu, name, base.load(name), A, B, scale); };
    }
    return t;
  };
  return ModelSource(base.config(), base.path(), base.format(), base.path() + " + adapter", lookup);
}

}  // namespace qlora
