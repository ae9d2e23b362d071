// Inference forward pass of a Llama-family model on the CPU backend: embedding, per block
// x + attn(rmsnorm(x)) and x + mlp(rmsnorm(x)), final norm, LM head. Causal GQA attention with a
// KV cache; f32 or bf16 compute (bf16 rounds activations between ops, accumulates in f32).
// A PEFT LoRA adapter can be applied unmerged (set_adapter): every adapted projection adds
// scale·(x·Aᵀ)·Bᵀ to the base product, dense or 4-bit, so one base serves with or without it.
// Proven against transformers' logits in tests/golden/test_golden_logits.cpp; the adapter path
// against weights merged by hand in tests/unit/test_inference_adapter.cpp.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "io/peft_adapter.h"
#include "model/weights.h"
#include "quant/quant_tensor.h"

namespace qlora {

// Optional 4-bit storage of the decoder's linear weights (q/k/v/o/gate/up/down), as QLoRA keeps its
// frozen base: quantized once at construction, the dense copies released, every product computed
// by the fused dequant-matmul (quant/qmatmul.h). Embeddings, norms and the LM head stay dense.
struct QuantizeOptions {
  bool enabled = false;
  QuantType type = QuantType::NF4;
  int64_t block_size = 64;
  bool double_quant = true;
};

struct ForwardOptions {
  DType compute = DType::F32;  // f32 or bf16 activations
  QuantizeOptions quantize;
};

// Keys and values of every layer for positions [0, size()).
class KvCache {
 public:
  KvCache(const LlamaConfig& config, int64_t max_seq);
  int64_t size() const { return size_; }
  int64_t capacity() const { return max_seq_; }
  void clear() { size_ = 0; }
  // Forgets positions [n, size()) so a conversation can re-run from a shared prefix.
  void truncate(int64_t n) { size_ = n < size_ ? (n < 0 ? 0 : n) : size_; }
  float* keys(int64_t layer) { return k_[size_t(layer)].data<float>(); }    // (max_seq, Hkv*D)
  float* values(int64_t layer) { return v_[size_t(layer)].data<float>(); }  // (max_seq, Hkv*D)
  void advance(int64_t n) { size_ += n; }

 private:
  int64_t max_seq_ = 0;
  int64_t size_ = 0;
  std::vector<Tensor> k_, v_;
};

class LlamaModel {
 public:
  explicit LlamaModel(LlamaModelFile file, ForwardOptions options = {});
  const LlamaConfig& config() const { return file_.config; }
  const LlamaModelFile& file() const { return file_; }

  // Runs `n` tokens at positions [cache.size(), cache.size() + n), appends them to the cache,
  // and returns logits (n, V) f32 — or (1, V) for the last token when !all_logits.
  Tensor forward(KvCache& cache, const int32_t* ids, int64_t n, bool all_logits) const;

  // Convenience: a fresh cache, one sequence; logits (T, V).
  Tensor forward_sequence(const std::vector<int32_t>& ids) const;

  // Applies a LoRA adapter unmerged, replacing any previous one. Validates every key (a decoder
  // projection q/k/v/o/gate/up/down_proj of a layer in range, A (R, in) and B (out, R) matching
  // the base's shapes); throws Error naming the key otherwise, leaving the model unchanged.
  void set_adapter(const PeftAdapter& adapter);
  void clear_adapter();
  bool has_adapter() const { return !lora_.empty(); }

 private:
  // y (n, out) = x (n, in) · Wᵀ (+ bias) for linear `index` of layer `layer`, dense or 4-bit.
  void project(int64_t layer, int index, const Tensor& dense, const float* x, const float* bias, float* y,
               int64_t n) const;

  LlamaModelFile file_;
  ForwardOptions options_;
  // Per layer, the 7 linears in LinearIndex order when options_.quantize.enabled.
  std::vector<std::vector<QuantTensor>> quantized_;
  std::vector<float> rope_inv_freq_;  // (D/2) after rope_scaling
  // LoRA delta of one projection: y += scale·(x·Aᵀ)·Bᵀ; `a` undefined when not adapted.
  struct LoraDelta {
    Tensor a;  // (R, in) f32
    Tensor b;  // (out, R) f32
    float scale = 0.0f;
  };
  std::vector<std::vector<LoraDelta>> lora_;  // per layer, 7 linears in LinearIndex order; empty: none
};

}  // namespace qlora
