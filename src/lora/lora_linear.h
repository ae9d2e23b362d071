// Linear: the one linear layer of the engine, serving every projection of the model in training
// and inference alike (LoRA is applied here and nowhere else),
//   y = x·W0ᵀ (+ bias) + scale · (dropout(x)·Aᵀ)·Bᵀ
// with W0 dense (f32/bf16/f64) or frozen 4-bit (QuantTensor, QLoRA: dequantized tile by tile in
// forward and backward, no dense copy kept), an optional bias, an optional LoRA adapter
// (A (R, in), B (out, R); trainable, or frozen when loaded for inference), and, for full
// fine-tuning, a trainable dense weight. All its tensors live on the backend's device; every
// product and element-wise step is a Backend kernel.
// Forward and backward for T = float (training) and T = double (finite-difference checks).
// Legend: N rows (B*T tokens), K = in features, O = out features, R rank.
// Tested in tests/grad/test_lora_grads.cpp (finite differences, every base kind) and
// tests/unit/test_lora.cpp (PEFT init statistics, dropout determinism, merge).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "backend/backend.h"
#include "core/quant_tensor.h"
#include "core/tensor.h"
#include "lora/lora_config.h"

namespace qlora {

struct LoraAdapter {
  Tensor A, B;            // (R, K), (O, R); f32 master copies (f64 in double mode)
  Tensor grad_A, grad_B;  // same shapes and dtype, accumulated by backward; undefined when frozen
  double scale = 1.0;     // alpha / r, or alpha / sqrt(r) with rsLoRA
  double dropout = 0.0;   // probability of zeroing an input element (inverted dropout)
};

struct Linear {
  std::string name;  // HF module name, e.g. "model.layers.3.self_attn.q_proj"
  int64_t in = 0, out = 0;
  Tensor weight;                         // (O, K) dense base in the compute dtype; undefined when quantized
  std::shared_ptr<const QuantTensor> qweight;  // (O, K) frozen 4-bit base (QLoRA)
  Tensor bias;                           // (O) or undefined
  // Full fine-tuning: weight and bias are trained; grads (same shape, f32 or f64) accumulate here.
  bool train_weight = false;
  Tensor grad_weight, grad_bias;
  std::unique_ptr<LoraAdapter> lora;
  // bf16 compute: the base products (and a trained weight's gradient) run as bf16 × bf16 → f32
  // GEMMs on bf16-rounded activations (Backend::*_bf16), as torch autocast runs them. f32 only.
  bool bf16_products = false;

  bool quantized() const { return qweight != nullptr; }
};

// What the forward keeps for the backward of one call: x·Aᵀ after dropout, and the dropout seed
// so the mask is regenerated instead of stored. Empty without an adapter.
struct LinearSaved {
  Tensor xa;              // (N, R) in T
  uint64_t dropout_seed = 0;
};

// Creates the adapter as PEFT does: A ~ kaiming_uniform(a=√5) = U(-1/√K, 1/√K), B = 0, in `dtype`
// (F32 or F64), as host tensors with zero grads (the engine moves them into its flat parameter
// buffers on its device). The stream is seeded from config.seed and the module name, so adding or
// removing targets does not change any other module's initial A.
void attach_lora(Linear& linear, const LoraConfig& config, DType dtype = DType::F32);

// y (N, O) = forward (overwritten). training: dropout active (seeded by dropout_seed); saved may be
// null when no backward follows (evaluation, inference).
template <typename T>
void linear_forward(Backend& backend, const Linear& linear, const T* x, T* y, int64_t N, bool training,
                    uint64_t dropout_seed, LinearSaved* saved);

// Backward of one forward call: dx (N, K) += dy·W_eff (dx may be null, e.g. at the first layer's
// input when nothing upstream needs it); grad_A, grad_B (+ grad_weight, grad_bias when
// train_weight) +=. x is the same input the forward saw.
template <typename T>
void linear_backward(Backend& backend, Linear& linear, const T* x, const T* dy, T* dx, const LinearSaved& saved,
                     int64_t N);

// W0 + scale·B·A as a dense f32 (O, K) host tensor (a 4-bit base is dequantized first, then merged
// with the delta formed in f64 and one rounding: merging into 4-bit directly would re-round the
// base). Computed on the backend that holds the layer.
Tensor merged_weight(Backend& backend, const Linear& linear);

}  // namespace qlora
