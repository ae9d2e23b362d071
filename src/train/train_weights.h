// The weights of a TrainModel laid out for training: per layer the two norms and the seven
// projections as Linears (dense, bf16 or 4-bit base, with LoRA adapters or trainable weights), the
// embedding, final norm and LM head, and the list of trainable Params (f32 masters + grads) with
// their checkpoint names. Built once from a loaded LlamaModelFile; dense copies of a 4-bit base are
// released as soon as each weight is quantized.
// Tested through tests/parity/test_train_parity.cpp and tests/grad/test_model_grads.cpp.
#pragma once
#include <array>
#include <utility>
#include <vector>

#include "core/projections.h"
#include "lora/lora_linear.h"
#include "model/weights.h"
#include "optim/param.h"
#include "train/train_model.h"

namespace qlora {

struct TrainLayer {
  Tensor input_norm, post_norm;            // (C) in the master dtype (f32, or f64)
  Tensor grad_input_norm, grad_post_norm;  // (C) full fine-tuning only
  std::array<Linear, kProjCount> linears;  // core/projections.h order
};

struct TrainWeights {
  Tensor embed;       // (V, C) compute copy: f32, bf16 or f64
  Tensor grad_embed;  // full fine-tuning only
  Tensor norm, grad_norm;  // (C)
  Tensor lm_head;     // (V, C) compute copy; the same storage as embed when tied
  Tensor grad_lm_head;  // full fine-tuning, untied only (tied: grad_embed collects both)
  bool tied = false;
  std::vector<TrainLayer> layers;
  std::vector<Param> params;                         // trainables, in a fixed order
  std::vector<std::pair<Tensor, Tensor>> refreshes;  // (f32 master, bf16 compute copy) to sync after a step
  size_t weight_bytes = 0;  // what the forward reads, as stored (4-bit codes + constants for QLoRA)
};

// Consumes `file`'s weights (releasing each dense tensor once converted).
TrainWeights build_train_weights(LlamaWeights& file_weights, const LlamaConfig& config,
                                 const TrainModelOptions& options);

}  // namespace qlora
