// Linear: the one linear layer of the training engine, serving every projection of the model,
//   y = x·W0ᵀ (+ bias) + scale · (dropout(x)·Aᵀ)·Bᵀ
// with W0 dense (f32/bf16/f64) or frozen 4-bit (QuantTensor, QLoRA: dequantized tile by tile in
// forward and backward, no dense copy kept), an optional bias, an optional LoRA adapter
// (A (R, in), B (out, R)), and, for full fine-tuning, a trainable dense weight.
// Forward and backward for T = float (training) and T = double (finite-difference checks).
// Legend: M rows (B*T tokens), K = in features, N = out features, R rank.
// Tested in tests/grad/test_lora_grads.cpp (finite differences, every base kind) and
// tests/unit/test_lora.cpp (PEFT init statistics, dropout determinism, merge).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"
#include "lora/lora_config.h"
#include "quant/quant_tensor.h"

namespace qlora {

struct LoraAdapter {
  Tensor A, B;            // (R, K), (N, R); f32 master copies (f64 in double mode)
  Tensor grad_A, grad_B;  // same shapes and dtype, accumulated by backward
  double scale = 1.0;     // alpha / r, or alpha / sqrt(r) with rsLoRA
  double dropout = 0.0;   // probability of zeroing an input element (inverted dropout)
};

struct Linear {
  std::string name;  // HF module name, e.g. "model.layers.3.self_attn.q_proj"
  int64_t in = 0, out = 0;
  Tensor weight;                         // (N, K) dense base in the compute dtype; undefined when quantized
  std::shared_ptr<const QuantTensor> qweight;  // (N, K) frozen 4-bit base (QLoRA)
  Tensor bias;                           // (N) or undefined
  // Full fine-tuning: weight and bias are trained; grads (same shape, f32 or f64) accumulate here.
  bool train_weight = false;
  Tensor grad_weight, grad_bias;
  std::unique_ptr<LoraAdapter> lora;

  bool quantized() const { return qweight != nullptr; }
};

// What the forward keeps for the backward of one call: x·Aᵀ after dropout, and the dropout seed
// so the mask is regenerated instead of stored. Empty without an adapter.
struct LinearSaved {
  Tensor xa;              // (M, R) in T
  uint64_t dropout_seed = 0;
};

// Creates the adapter as PEFT does: A ~ kaiming_uniform(a=√5) = U(-1/√K, 1/√K), B = 0, in `dtype`
// (F32 or F64). The stream is seeded from config.seed and the module name, so adding or removing
// targets does not change any other module's initial A.
void attach_lora(Linear& linear, const LoraConfig& config, DType dtype = DType::F32);

// y (M, N) = forward (overwritten). training: dropout active (seeded by dropout_seed); saved may be
// null when no backward follows (evaluation).
template <typename T>
void linear_forward(const Linear& linear, const T* x, T* y, int64_t M, bool training, uint64_t dropout_seed,
                    LinearSaved* saved);

// Backward of one forward call: dx (M, K) += dy·W_eff (dx may be null, e.g. at the first layer's
// input when nothing upstream needs it); grad_A, grad_B (+ grad_weight, grad_bias when
// train_weight) +=. x is the same input the forward saw.
template <typename T>
void linear_backward(Linear& linear, const T* x, const T* dy, T* dx, const LinearSaved& saved, int64_t M);

// W0 + scale·B·A as a dense f32 (N, K) tensor (a 4-bit base is dequantized first, then merged in
// f32: merging into 4-bit directly would re-round the base).
Tensor merged_weight(const Linear& linear);

}  // namespace qlora
