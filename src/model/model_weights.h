// The weights of a LlamaModel as its blocks use them, on the model's backend: per layer the two
// norms (four with Qwen3's q/k head norms) and the seven projections as Linears (dense, bf16 or 4-bit base, with LoRA adapters or
// trainable weights), the embedding, final norm and LM head. Trainable parameters (f32 masters,
// f64 in f64 mode) and their gradients live in one flat allocation each, in registration order
// (embedding, each layer's norms and projections, final norm, head), so an all-reduce or a fused
// optimizer step sees one buffer; `groups` gives each block's range in it for the "gradients
// ready" hook. Built once from a loaded LlamaModelFile; dense copies of a 4-bit base are released
// as soon as each weight is quantized.
// Tested through tests/unit/test_train_model.cpp (flat buffers, hook ranges),
// tests/parity/test_train_parity.cpp and tests/grad/test_model_grads.cpp.
#pragma once
#include <array>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "core/param.h"
#include "core/projections.h"
#include "lora/lora_linear.h"
#include "model/model_options.h"
#include "model/model_source.h"
#include "model/weights.h"

namespace qlora {

struct ModelLayer {
  Tensor input_norm, post_norm;            // (C) in the master dtype (f32, or f64)
  Tensor grad_input_norm, grad_post_norm;  // (C) full fine-tuning only
  Tensor q_norm, k_norm;                   // (D) per-head norms of q and k (qk_norm only), master dtype
  Tensor grad_q_norm, grad_k_norm;         // (D) full fine-tuning only
  std::array<Linear, kProjCount> linears;  // core/projections.h order; gate/up/down unused with experts
  // MoE (config.moe()): the router (E, C) and per expert {gate, up, down} (model/weights.h names).
  Linear router;
  std::vector<std::array<Linear, 3>> experts;
};

// The params of one block (or the embedding, block -1, or the final norm and head, block L) and
// their bytes in the flat gradient buffer.
struct ParamGroup {
  int64_t block = 0;
  size_t first_param = 0, param_count = 0;
  size_t offset = 0, bytes = 0;
};

struct ModelWeights {
  Tensor embed;       // (V, C) compute copy: f32, bf16 or f64
  Tensor grad_embed;  // full fine-tuning only
  Tensor norm, grad_norm;  // (C)
  Tensor lm_head;     // (V, C) compute copy; the same storage as embed when tied
  Tensor grad_lm_head;  // full fine-tuning, untied only (tied: grad_embed collects both)
  bool tied = false;
  std::vector<ModelLayer> layers;
  std::vector<Param> params;          // trainables, in registration order: views of the flat buffers
  Tensor flat_values, flat_grads;     // one allocation each (undefined for a frozen model)
  std::vector<ParamGroup> groups;     // consecutive ranges of `params`, one per block that has params
  std::vector<std::pair<Tensor, Tensor>> refreshes;  // (f32 master, bf16 compute copy) to sync after a step
  size_t weight_bytes = 0;  // what the forward reads, as stored (4-bit codes + constants for QLoRA)
};

// Reads the source tensor by tensor into tensors on `backend`'s device, releasing each source
// tensor once it is converted, quantized or copied into the flat buffers.
ModelWeights build_model_weights(Backend& backend, const ModelSource& source, const ModelOptions& options);

}  // namespace qlora
