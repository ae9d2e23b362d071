// LoraConfig: the scale PEFT applies (alpha / r, or alpha / √r with rsLoRA), validation naming the
// bad field, and the target-module match. Tested in tests/unit/test_lora.cpp.
#include "lora/lora_config.h"

#include <algorithm>
#include <cmath>
#include <string_view>

#include "core/error.h"
#include "core/projections.h"

namespace qlora {

namespace {

// The last dotted component: "model.layers.3.self_attn.q_proj" -> "q_proj".
std::string_view leaf_name(std::string_view name) {
  const size_t dot = name.rfind('.');
  return dot == std::string_view::npos ? name : name.substr(dot + 1);
}

}  // namespace

double LoraConfig::scale() const {
  // PEFT LoraLayer.update_layer: scaling = lora_alpha / r, or lora_alpha / math.sqrt(r) with rsLoRA.
  return use_rslora ? lora_alpha / std::sqrt(double(r)) : lora_alpha / double(r);
}

void LoraConfig::validate() const {
  if (r < 1) fail("lora", "r (the adapter rank) must be >= 1; got {}", r);
  if (!(lora_alpha > 0) || !std::isfinite(lora_alpha))
    fail("lora", "lora_alpha must be a finite number > 0; got {}", lora_alpha);
  // NaN fails both comparisons, so it is rejected too.
  if (!(lora_dropout >= 0.0 && lora_dropout < 1.0))
    fail("lora", "lora_dropout must be in [0, 1); got {}", lora_dropout);
  if (target_modules.empty())
    fail("lora", "target_modules is empty; expected some of {}", projection_list());
  for (const std::string& m : target_modules)
    if (projection_index(m) < 0 && !is_moe_module_name(m))
      fail("lora", "target_modules: unknown module '{}'; expected one of {}, or on an MoE model {}", m,
           projection_list(), kMoeModuleList);
}

bool LoraConfig::targets(const std::string& module) const {
  // Accepts the short name ("q_proj") or a full HF module name ("model.layers.3.self_attn.q_proj"),
  // matched on its last component as PEFT matches target_modules by suffix.
  const std::string_view leaf = leaf_name(module);
  return std::any_of(target_modules.begin(), target_modules.end(),
                     [&](const std::string& t) { return t == module || t == leaf; });
}

}  // namespace qlora
