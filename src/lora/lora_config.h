// LoRA settings as PEFT spells them (r, lora_alpha, lora_dropout, target_modules, use_rslora), and
// which linears of a Llama block they select. Tested in tests/unit/test_lora.cpp.
#pragma once
#include <cstdint>
#include <string>

#include "core/projections.h"
#include <vector>

namespace qlora {

struct LoraConfig {
  int64_t r = 8;
  double lora_alpha = 16;
  double lora_dropout = 0.0;
  bool use_rslora = false;  // scale alpha/sqrt(r) instead of alpha/r (Kalajdzievski 2023)
  std::vector<std::string> target_modules = all_projection_names();
  uint64_t seed = 0;  // initialisation of A

  double scale() const;
  // Throws Error naming the bad field: r < 1, alpha <= 0, dropout outside [0, 1), an unknown
  // module (anything but q/k/v/o/gate/up/down_proj, or an MoE model's gate/w1/w2/w3), or an
  // empty target list.
  void validate() const;
  bool targets(const std::string& module) const;  // "q_proj", ...
};

}  // namespace qlora
