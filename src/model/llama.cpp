// Llama-family inference forward on the CPU backend. Per block, for n new tokens:
//   h = rmsnorm(x) ; q,k,v = h·Wqᵀ(+b), h·Wkᵀ(+b), h·Wvᵀ(+b) ; rope(q, k) ; append k, v to the cache
//   x += attention(q, cache)·Woᵀ ; h = rmsnorm(x) ; x += (silu(h·Wgᵀ) * h·Wuᵀ)·Wdᵀ
// then logits = rmsnorm(x)·Wheadᵀ. With bf16 compute every activation is rounded to bf16 where
// torch would store a bf16 tensor; matmuls accumulate in f32.
#include "model/llama.h"

#include <array>
#include <cstring>

#include "backend/cpu/attention.h"
#include "backend/cpu/linear.h"
#include "backend/cpu/ops.h"
#include "core/error.h"
#include "model/rope_scaling.h"
#include "quant/nf4.h"
#include "quant/qmatmul.h"

namespace qlora {

KvCache::KvCache(const LlamaConfig& config, int64_t max_seq) : max_seq_(max_seq) {
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    k_.push_back(Tensor::zeros({max_seq, config.kv_dim()}));
    v_.push_back(Tensor::zeros({max_seq, config.kv_dim()}));
  }
}

namespace {

// The decoder linears, in the order quantized_ stores them.
enum LinearIndex { kQ, kK, kV, kO, kGate, kUp, kDown, kLinearCount };

std::array<Tensor*, kLinearCount> layer_linears(LlamaLayerWeights& lw) {
  return {&lw.q_proj, &lw.k_proj, &lw.v_proj, &lw.o_proj, &lw.gate_proj, &lw.up_proj, &lw.down_proj};
}

const float* bias_or_null(const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }

// Scratch buffers for n tokens (rows), sized once per forward call.
struct Activations {
  Tensor x, h, q, k, v, attn, proj, gate, up;
  Activations(const LlamaConfig& c, int64_t n)
      : x(Tensor::zeros({n, c.hidden_size})),
        h(Tensor::zeros({n, c.hidden_size})),
        q(Tensor::zeros({n, c.q_dim()})),
        k(Tensor::zeros({n, c.kv_dim()})),
        v(Tensor::zeros({n, c.kv_dim()})),
        attn(Tensor::zeros({n, c.q_dim()})),
        proj(Tensor::zeros({n, c.hidden_size})),
        gate(Tensor::zeros({n, c.intermediate_size})),
        up(Tensor::zeros({n, c.intermediate_size})) {}
};

}  // namespace

LlamaModel::LlamaModel(LlamaModelFile file, ForwardOptions options)
    : file_(std::move(file)), options_(options), rope_inv_freq_(rope_inverse_frequencies(file_.config)) {
  if (options_.compute != DType::F32 && options_.compute != DType::BF16)
    fail("model", "compute dtype {} not supported; expected f32 or bf16", dtype_name(options_.compute));
  if (!options_.quantize.enabled) return;
  const QuantizeOptions& q = options_.quantize;
  for (LlamaLayerWeights& lw : file_.weights.layers) {
    std::vector<QuantTensor> quantized;
    for (Tensor* w : layer_linears(lw)) {
      quantized.push_back(quantize_4bit(*w, q.type, q.block_size, q.double_quant));
      *w = Tensor();  // release the dense copy: only the 4-bit form stays resident
    }
    quantized_.push_back(std::move(quantized));
  }
}

void LlamaModel::project(int64_t layer, int index, const Tensor& dense, const float* x, const float* bias, float* y,
                         int64_t n) const {
  if (quantized_.empty()) return cpu::linear(x, dense, bias, y, n);
  const QuantTensor& w = quantized_[size_t(layer)][size_t(index)];
  qmatmul_forward(x, w, y, n);
  cpu::add_row_bias(y, bias, n, w.shape[0]);
}

Tensor LlamaModel::forward(KvCache& cache, const int32_t* ids, int64_t n, bool all_logits) const {
  const LlamaConfig& c = file_.config;
  const LlamaWeights& w = file_.weights;
  const int64_t p0 = cache.size();
  if (n <= 0) fail("forward", "no tokens to run");
  if (p0 + n > cache.capacity())
    fail("forward", "sequence of {} tokens exceeds the context of {}", p0 + n, cache.capacity());
  const int64_t C = c.hidden_size, F = c.intermediate_size, D = c.head_dim;
  const bool bf16 = options_.compute == DType::BF16;
  auto round = [bf16](Tensor& t) {
    if (bf16) round_to_bf16(t.data<float>(), size_t(t.numel()));
  };

  Activations a(c, n);
  std::vector<int64_t> positions(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) positions[size_t(i)] = p0 + i;

  cpu::embedding(w.embed_tokens, ids, n, a.x.data<float>());  // (n, C)
  round(a.x);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LlamaLayerWeights& lw = w.layers[size_t(l)];
    // Attention half.
    cpu::rmsnorm(a.x.data<float>(), lw.input_layernorm.data<float>(), a.h.data<float>(), n, C, float(c.rms_norm_eps));
    round(a.h);
    project(l, kQ, lw.q_proj, a.h.data<float>(), bias_or_null(lw.q_bias), a.q.data<float>(), n);  // (n, H*D)
    project(l, kK, lw.k_proj, a.h.data<float>(), bias_or_null(lw.k_bias), a.k.data<float>(), n);  // (n, Hkv*D)
    project(l, kV, lw.v_proj, a.h.data<float>(), bias_or_null(lw.v_bias), a.v.data<float>(), n);  // (n, Hkv*D)
    round(a.q), round(a.k), round(a.v);
    cpu::rope(a.q.data<float>(), positions.data(), rope_inv_freq_.data(), n, c.num_attention_heads, D);
    cpu::rope(a.k.data<float>(), positions.data(), rope_inv_freq_.data(), n, c.num_key_value_heads, D);
    round(a.q), round(a.k);
    float* keys = cache.keys(l);
    float* values = cache.values(l);
    std::memcpy(keys + p0 * c.kv_dim(), a.k.data<float>(), size_t(n * c.kv_dim()) * 4);
    std::memcpy(values + p0 * c.kv_dim(), a.v.data<float>(), size_t(n * c.kv_dim()) * 4);
    cpu::attention_causal(a.q.data<float>(), keys, values, a.attn.data<float>(), n, p0, c.num_attention_heads,
                          c.num_key_value_heads, D, c.sliding_window);
    round(a.attn);
    project(l, kO, lw.o_proj, a.attn.data<float>(), nullptr, a.proj.data<float>(), n);  // (n, C)
    round(a.proj);
    cpu::add_inplace(a.x.data<float>(), a.proj.data<float>(), n * C);
    round(a.x);
    // MLP half.
    cpu::rmsnorm(a.x.data<float>(), lw.post_attention_layernorm.data<float>(), a.h.data<float>(), n, C,
                 float(c.rms_norm_eps));
    round(a.h);
    project(l, kGate, lw.gate_proj, a.h.data<float>(), nullptr, a.gate.data<float>(), n);  // (n, F)
    project(l, kUp, lw.up_proj, a.h.data<float>(), nullptr, a.up.data<float>(), n);      // (n, F)
    round(a.gate), round(a.up);
    cpu::swiglu(a.gate.data<float>(), a.up.data<float>(), a.gate.data<float>(), n * F);
    round(a.gate);
    project(l, kDown, lw.down_proj, a.gate.data<float>(), nullptr, a.proj.data<float>(), n);  // (n, C)
    round(a.proj);
    cpu::add_inplace(a.x.data<float>(), a.proj.data<float>(), n * C);
    round(a.x);
  }
  cache.advance(n);

  const int64_t rows = all_logits ? n : 1;
  const float* last = a.x.data<float>() + (n - rows) * C;
  cpu::rmsnorm(last, w.norm.data<float>(), a.h.data<float>(), rows, C, float(c.rms_norm_eps));
  round(a.h);
  Tensor logits = Tensor::zeros({rows, c.vocab_size});  // (rows, V)
  cpu::linear(a.h.data<float>(), w.lm_head, nullptr, logits.data<float>(), rows);
  return logits;
}

Tensor LlamaModel::forward_sequence(const std::vector<int32_t>& ids) const {
  KvCache cache(file_.config, int64_t(ids.size()));
  return forward(cache, ids.data(), int64_t(ids.size()), true);
}

}  // namespace qlora
