// Param: one trainable tensor as the optimizer sees it: an f32 master value and its f32 gradient
// (same shape), a name for checkpoints (PEFT/HF key) and whether weight decay applies. (A model run
// in f64 for gradient checks hands out f64 params; optimizers accept f32 only.)
#pragma once
#include <string>
#include <vector>

#include "core/tensor.h"

namespace qlora {

struct Param {
  std::string name;
  Tensor value;  // f32, updated in place
  Tensor grad;   // f32, same shape
  bool weight_decay = true;
};

}  // namespace qlora
