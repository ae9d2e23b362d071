// TrainModel: a Llama-family model set up for training — full fine-tuning, LoRA over a dense
// (f32/bf16) base, or QLoRA over a frozen 4-bit (NF4, double-quantized) base that is only ever
// dequantized tile by tile — with an explicit forward and backward per block (no autograd):
//   block: x_mid = x + o(attn(rope(q(h1)), rope(k(h1)), v(h1))), h1 = rmsnorm(x)
//          x_out = x_mid + down(silu(gate(h2)) * up(h2)),       h2 = rmsnorm(x_mid)
//   head:  loss = cross_entropy(rmsnorm(x_L)·lm_headᵀ, shifted labels), fused and chunked.
// Every projection is a Linear (lora/lora_linear.h). Compute in f32, in bf16 (frozen weights
// stored bf16, activations rounded to bf16 where torch would store bf16 tensors, f32 master
// copies and f32 gradients), or in f64 for finite-difference checks of the whole model.
// Gradient checkpointing: blocks l with l % checkpoint_every == 0 keep only their input and
// recompute their activations inside the backward (same dropout seeds, so the same numbers).
// Legend: B batch, T sequence, N = B*T rows, C hidden, H heads, Hkv kv heads, D head dim,
// F ffn, V vocab, L layers, R rank.
// Tested in tests/grad/test_model_grads.cpp (finite differences of the whole model in f64) and
// tests/parity/test_train_parity.cpp (loss, gradients and 10-step curves vs transformers + PEFT).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lora/lora_config.h"
#include "lora/lora_linear.h"
#include "model/llama.h"
#include "model/weights.h"
#include "train/trainable.h"

namespace qlora {

enum class TrainMethod { Full, Lora, Qlora };
TrainMethod train_method_from_name(const std::string& name);  // "full" | "lora" | "qlora"; throws Error
std::string train_method_name(TrainMethod method);

struct TrainModelOptions {
  TrainMethod method = TrainMethod::Qlora;
  LoraConfig lora;             // lora and qlora
  QuantizeOptions quantize;    // qlora's base: type, block size, double quantization (`enabled` is ignored)
  DType compute = DType::F32;  // F32 | BF16 | F64 (gradient checks)
  int64_t checkpoint_every = 0;  // 0: keep every block's activations; k >= 1: recompute blocks l % k == 0
};

class TrainModel final : public Trainable {
 public:
  TrainModel(LlamaModelFile file, TrainModelOptions options);
  ~TrainModel() override;

  LossSum forward_backward(const Batch& batch, double grad_scale, uint64_t dropout_seed) override;
  LossSum evaluate(const Batch& batch) override;
  // LoRA/QLoRA: every lora_A / lora_B under PEFT's saved key names
  // ("base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight"); full: HF parameter names.
  std::vector<Param> parameters() override;
  void zero_grad() override;
  void parameters_updated() override;
  MemoryStats memory() const override;

  // Logits (B*T, V) in f32 for a batch (adapters applied unmerged, no dropout).
  Tensor logits(const Batch& batch);

  const LlamaConfig& config() const;
  const TrainModelOptions& options() const;
  // The decoder's projections of layer `layer` in the order q, k, v, o, gate, up, down.
  std::vector<const Linear*> layer_linears(int64_t layer) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qlora
