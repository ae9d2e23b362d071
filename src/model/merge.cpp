// LoRA merge into dense weights. See merge.h. Legend: O out features, K in features, R rank.
#include "model/merge.h"

#include <map>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "lora/lora_linear.h"

namespace qlora {
namespace {

// The weight of a module path ("self_attn.q_proj"), or null when a layer has no such module.
Tensor* module_weight(LlamaLayerWeights& L, const std::string& module) {
  for (int p = 0; p < kProjCount; ++p)
    if (module == projection_path(p)) return &L.projection(p);
  return nullptr;
}

}  // namespace

void merge_adapter(LlamaWeights& weights, const LlamaConfig& config, const PeftAdapter& adapter) {
  const std::string prefix = "base_model.model.model.layers.";
  const double scale = adapter.config.scale();
  const std::shared_ptr<Backend> cpu = make_cpu_backend();  // the weights are host tensors
  std::map<std::string, bool> done;
  for (const auto& [key, tensor] : adapter.tensors) {
    // key: base_model.model.model.layers.{l}.{self_attn|mlp}.{x}_proj.lora_{A|B}.weight
    const bool is_a = key.size() > 14 && key.compare(key.size() - 14, 14, ".lora_A.weight") == 0;
    const bool is_b = key.size() > 14 && key.compare(key.size() - 14, 14, ".lora_B.weight") == 0;
    if (key.rfind(prefix, 0) != 0 || (!is_a && !is_b))
      fail("merge", "adapter key '{}' is not a decoder-layer LoRA weight (base_model.model.model.layers.N.*.lora_A/B.weight)",
           key);
    const std::string rest = key.substr(prefix.size(), key.size() - prefix.size() - 14);  // "{l}.self_attn.q_proj"
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
    Tensor* w = module_weight(weights.layers[size_t(layer)], module);
    if (!w) fail("merge", "adapter key '{}' names module '{}', which a Llama layer does not have", key, module);
    const std::string module_name = "model.layers." + rest;
    if (done.count(module_name)) continue;
    done[module_name] = true;

    const auto [A, B] = adapter.module(module_name);  // A (R, K), B (O, R)
    if (!A.defined() || !B.defined())
      fail("merge", "adapter module '{}' lacks its lora_{}", module_name, A.defined() ? "B" : "A");
    const int64_t O = w->dim(0), K = w->dim(1), R = A.dim(0);
    if (A.ndim() != 2 || B.ndim() != 2 || A.dim(1) != K || B.dim(0) != O || B.dim(1) != R)
      fail("merge", "adapter module '{}': lora_A {} and lora_B {} do not fit the weight {} (expected A (R, {}) and "
                    "B ({}, R))",
           module_name, shape_str(A.shape()), shape_str(B.shape()), shape_str(w->shape()), K, O);
    Linear linear;
    linear.name = module_name;
    linear.out = O, linear.in = K;
    linear.weight = *w;
    linear.lora = std::make_unique<LoraAdapter>();
    linear.lora->A = A, linear.lora->B = B, linear.lora->scale = scale;
    const Tensor merged = merged_weight(*cpu, linear);  // (O, K) f32, a new tensor
    // Replace (not write through): the tensor may view a read-only mapping or share storage.
    *w = w->dtype() == DType::F32 ? merged : merged.to(w->dtype());
  }
}

}  // namespace qlora
