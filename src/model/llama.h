// LlamaModel: the one engine of qlora.cpp. A Llama-family model (Llama 2/3, Mistral, Qwen2,
// SmolLM2) with an explicit forward and backward per block (no autograd), as llm.c writes it:
//   block: x_mid = x + o(attn(rope(q(h1)), rope(k(h1)), v(h1))), h1 = rmsnorm(x)
//          x_out = x_mid + down(silu(gate(h2)) * up(h2)),       h2 = rmsnorm(x_mid)
//   head:  loss = cross_entropy(rmsnorm(x_L)·lm_headᵀ, shifted labels), fused and chunked.
// The same block code serves training (full fine-tuning, LoRA over a dense base, QLoRA over a
// frozen 4-bit base) and inference (generate, chat, eval, perplexity), which runs it with a KV cache
// and keeps no activations, as llm.c samples with its training forward. Every projection is a
// Linear (lora/lora_linear.h), the one place LoRA is applied. All memory and compute go through
// the model's Backend.
// Compute in f32, in bf16 (frozen weights stored bf16, activations rounded to bf16 where torch
// would store bf16 tensors, f32 master copies and gradients), or in f64 for finite-difference
// checks of the whole model. Gradient checkpointing: blocks l with l % checkpoint_every == 0 keep
// only their input and recompute their activations inside the backward (same dropout seeds).
// Legend: B batch, T sequence, N = B*T rows, C hidden, H heads, Hkv kv heads, D head dim,
// F ffn, V vocab, L layers, R rank.
// Tested in tests/golden/test_golden_logits.cpp (logits vs transformers), tests/grad/
// test_model_grads.cpp (finite differences of the whole model in f64), tests/parity/
// test_train_parity.cpp (loss, gradients and 10-step curves vs transformers + PEFT),
// tests/unit/test_inference_adapter.cpp (adapters unmerged) and tests/unit/test_backend_seam.cpp
// (no memory touched outside the backend).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/param.h"
#include "core/tensor.h"
#include "io/peft_adapter.h"
#include "lora/lora_linear.h"
#include "model/batch.h"
#include "model/model_options.h"
#include "model/model_source.h"
#include "model/weights.h"

namespace qlora {

struct LossSum {
  double loss = 0;     // summed cross-entropy over rows with a target
  int64_t tokens = 0;  // rows with a target
  // MoE with output_router_logits: the micro-batch's load-balancing loss (transformers' aux_loss,
  // not in `loss`), and the term the training objective adds for it, router_aux_loss_coef ×
  // aux_loss × tokens (so (loss + aux_term) / tokens is transformers' loss on one micro-batch; with
  // accumulation each micro-batch's aux weighs by its share of the targets). Its gradient is in
  // the backward.
  double aux_loss = 0;
  double aux_term = 0;
  double mean() const { return tokens ? loss / double(tokens) : 0.0; }  // the cross-entropy only
};

struct MemoryStats {
  size_t weights = 0;             // frozen and trainable weights as stored (4-bit codes + constants for QLoRA)
  size_t trainable = 0;           // master copies of trainable params
  size_t gradients = 0;           // gradient buffers
  size_t activations_peak = 0;    // peak bytes of activations kept for the backward + working buffers
  size_t activations_saved_peak = 0;  // of which: kept between forward and backward
};

// Passed to the gradients-ready hook during a backward: the params of `block` (-1: the embedding,
// L: the final norm and LM head) have their gradients of this micro-batch complete, in bytes
// [offset, offset + bytes) of the flat gradient buffer (params [first_param, + param_count)).
// Order: L (head), L-1, ..., 0, then -1 (embedding); blocks without trainable params are skipped.
struct GradientsReady {
  int64_t block = 0;
  size_t first_param = 0, param_count = 0;
  size_t offset = 0, bytes = 0;
};

// Keys and values of every layer for positions [0, size()), on the model's backend (allocated by
// the first forward that uses the cache).
class KvCache {
 public:
  KvCache(const LlamaConfig& config, int64_t max_seq);
  int64_t size() const { return size_; }
  int64_t capacity() const { return max_seq_; }
  void clear() { size_ = 0; }
  // Forgets positions [n, size()) so a conversation can re-run from a shared prefix.
  void truncate(int64_t n) { size_ = n < size_ ? (n < 0 ? 0 : n) : size_; }

 private:
  friend class LlamaModel;
  int64_t max_seq_ = 0, layers_ = 0, kv_dim_ = 0;
  int64_t size_ = 0;
  std::vector<Tensor> k_, v_;  // per layer (max_seq, Hkv*D)
};

class LlamaModel {
 public:
  // Streams the weights from `source` one tensor at a time (model/model_source.h).
  LlamaModel(const ModelSource& source, ModelOptions options);
  LlamaModel(LlamaModelFile file, ModelOptions options);
  // An inference model (no trainable parameters).
  explicit LlamaModel(const ModelSource& source, ForwardOptions options = {});
  explicit LlamaModel(LlamaModelFile file, ForwardOptions options = {});
  ~LlamaModel();
  LlamaModel(LlamaModel&&) noexcept;
  LlamaModel& operator=(LlamaModel&&) noexcept;

  // ---- training ----
  // Forward and backward of one micro-batch: gradients accumulate (+=) scaled by grad_scale;
  // returns the summed (unscaled) loss.
  LossSum forward_backward(const Batch& batch, double grad_scale, uint64_t dropout_seed);
  LossSum evaluate(const Batch& batch);  // loss only, no dropout
  // Logits (B*T, V) in f32 on the host for a batch (adapters applied, no dropout).
  Tensor logits(const Batch& batch);
  // LoRA/QLoRA: every lora_A / lora_B under PEFT's saved key names
  // ("base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight"); full: HF parameter names.
  // Views of the flat buffers below, in registration order.
  std::vector<Param> parameters() const;
  const Tensor& flat_parameters() const;  // (n) every trainable value, undefined when frozen
  const Tensor& flat_gradients() const;   // (n) their gradients, same layout
  void zero_grad();
  void parameters_updated();  // refreshes bf16 compute copies after an optimizer step
  MemoryStats memory() const;
  void set_gradients_ready_hook(std::function<void(const GradientsReady&)> hook);

  // ---- inference ----
  // Runs `n` tokens at positions [cache.size(), cache.size() + n), appends them to the cache,
  // and returns host logits (n, V) f32, or (1, V) for the last token when !all_logits.
  Tensor forward(KvCache& cache, const int32_t* ids, int64_t n, bool all_logits) const;
  // A fresh cache, one sequence; logits (T, V).
  Tensor forward_sequence(const std::vector<int32_t>& ids) const;
  // Applies a PEFT LoRA adapter unmerged (inference models only), replacing any previous one.
  // Validates every key (a linear the layer has: a projection, or an MoE router or expert; A (R, in)
  // and B (out, R) fitting the base); throws Error naming the key otherwise, leaving the model unchanged.
  void set_adapter(const PeftAdapter& adapter);
  void clear_adapter();
  bool has_adapter() const;

  const LlamaConfig& config() const;
  const ModelOptions& options() const;
  Backend& backend() const;
  // Every linear of layer `layer`: the projections in core/projections.h order (a sparse MoE
  // layer: the attention ones only), then its router and each expert's gate, up, down.
  std::vector<const Linear*> layer_linears(int64_t layer) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace qlora
