// LoRA merge into dense weights. See merge.h. Legend: O out features, K in features, R rank.
#include "model/merge.h"

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "lora/lora_linear.h"

namespace qlora {
namespace {

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
    const PeftLoraKey k = parse_peft_lora_key(key, "merge");
    if (k.layer >= config.num_hidden_layers)
      fail("merge", "adapter key '{}' names layer {}; the model has layers 0..{}", key, k.layer,
           config.num_hidden_layers - 1);
    const std::optional<LayerModule> m = find_layer_module(config, k.layer, k.module);
    if (!m)
      fail("merge", "adapter key '{}' names module '{}', which layer {} of this {} model does not have", key, k.module,
           k.layer, config.architecture);
    const std::string module_name = "model.layers." + std::to_string(k.layer) + "." + k.module;
    const std::string weight = module_name + ".weight";
    if (out.count(weight)) continue;

    const auto [A, B] = adapter.module(module_name);  // A (R, K), B (O, R)
    if (!A.defined() || !B.defined())
      fail("merge", "adapter module '{}' lacks its lora_{}", module_name, A.defined() ? "B" : "A");
    const int64_t O = m->out, K = m->in;
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
