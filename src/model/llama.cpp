// Llama-family inference forward on the CPU backend. Per block, for n new tokens:
//   h = rmsnorm(x) ; q,k,v = h·Wqᵀ(+b), h·Wkᵀ(+b), h·Wvᵀ(+b) ; rope(q, k) ; append k, v to the cache
//   x += attention(q, cache)·Woᵀ ; h = rmsnorm(x) ; x += (silu(h·Wgᵀ) * h·Wuᵀ)·Wdᵀ
// then logits = rmsnorm(x)·Wheadᵀ. With bf16 compute every activation is rounded to bf16 where
// torch would store a bf16 tensor; matmuls accumulate in f32.
// An unmerged LoRA adapter adds scale·(x·Aᵀ)·Bᵀ to each adapted projection, computed in f32 as two
// thin products (n, in)·(in, R) and (n, R)·(R, out): cheap next to the base product even at n = 1.
#include "model/llama.h"

#include <array>
#include <charconv>
#include <cstring>
#include <string_view>

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

enum LinearIndex { kQ = kProjQ, kK = kProjK, kV = kProjV, kO = kProjO, kGate = kProjGate, kUp = kProjUp,
                   kDown = kProjDown, kLinearCount = kProjCount };

// A PEFT key "base_model.model.model.layers.{i}.{module}.lora_{A|B}.weight" split into layer,
// linear index and which factor; throws naming the key when it is anything else.
struct LoraKey {
  int64_t layer = -1;
  int index = -1;
  bool is_a = false;
};

LoraKey parse_lora_key(const std::string& key, int64_t n_layers) {
  std::string_view k = key;
  auto bad = [&](const std::string& why) -> LoraKey {
    fail("adapter", "tensor {}: {}; expected base_model.model.model.layers.<i>.<self_attn|mlp>.<proj>.lora_<A|B>.weight",
         key, why);
  };
  constexpr std::string_view kPrefix = "base_model.model.model.layers.";
  if (!k.starts_with(kPrefix)) return bad("not a decoder-layer LoRA weight (only q/k/v/o/gate/up/down_proj are supported)");
  k.remove_prefix(kPrefix.size());
  LoraKey out;
  const auto [end, ec] = std::from_chars(k.data(), k.data() + k.size(), out.layer);
  if (ec != std::errc() || end == k.data() || *end != '.') return bad("no layer index");
  k.remove_prefix(size_t(end - k.data()) + 1);
  if (out.layer < 0 || out.layer >= n_layers)
    fail("adapter", "tensor {}: layer {} out of range; the model has {} layers", key, out.layer, n_layers);
  if (k.ends_with(".lora_A.weight")) {
    out.is_a = true;
    k.remove_suffix(std::string_view(".lora_A.weight").size());
  } else if (k.ends_with(".lora_B.weight")) {
    k.remove_suffix(std::string_view(".lora_B.weight").size());
  } else {
    return bad("not a lora_A/lora_B weight");
  }
  for (int i = 0; i < kLinearCount; ++i)
    if (k == projection_path(i)) out.index = i;
  if (out.index < 0) return bad(fmt::format("unknown module '{}'", k));
  return out;
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
    for (int p = 0; p < kProjCount; ++p) {
      Tensor& w = lw.projection(p);
      quantized.push_back(quantize_4bit(w, q.type, q.block_size, q.double_quant));
      w = Tensor();  // release the dense copy: only the 4-bit form stays resident
    }
    quantized_.push_back(std::move(quantized));
  }
}

void LlamaModel::set_adapter(const PeftAdapter& adapter) {
  const LlamaConfig& c = file_.config;
  // Built aside and swapped in, so a bad adapter leaves the model as it was.
  std::vector<std::vector<LoraDelta>> lora(size_t(c.num_hidden_layers), std::vector<LoraDelta>(kLinearCount));
  std::vector<std::vector<std::array<std::string, 2>>> keys(size_t(c.num_hidden_layers),
                                                           std::vector<std::array<std::string, 2>>(kLinearCount));
  const float scale = float(adapter.config.scale());
  for (const auto& [key, tensor] : adapter.tensors) {
    const LoraKey k = parse_lora_key(key, c.num_hidden_layers);
    const auto [out, in] = c.projection_shape(k.index);
    if (tensor.ndim() != 2 || tensor.dtype() != DType::F32)
      fail("adapter", "tensor {}: expected a 2-D f32 tensor, got {} {}", key, dtype_name(tensor.dtype()),
           shape_str(tensor.shape()));
    LoraDelta& d = lora[size_t(k.layer)][size_t(k.index)];
    if (k.is_a) {
      if (tensor.dim(1) != in)
        fail("adapter", "tensor {}: shape {}; expected (R, {}) for this model", key, shape_str(tensor.shape()), in);
      d.a = tensor;
    } else {
      if (tensor.dim(0) != out)
        fail("adapter", "tensor {}: shape {}; expected ({}, R) for this model", key, shape_str(tensor.shape()), out);
      d.b = tensor;
    }
    keys[size_t(k.layer)][size_t(k.index)][k.is_a ? 0 : 1] = key;
    d.scale = scale;
  }
  bool any = false;
  for (size_t l = 0; l < lora.size(); ++l)
    for (size_t i = 0; i < kLinearCount; ++i) {
      LoraDelta& d = lora[l][i];
      if (!d.a.defined() && !d.b.defined()) continue;
      const std::string& named = keys[l][i][d.a.defined() ? 0 : 1];
      if (!d.a.defined() || !d.b.defined())
        fail("adapter", "tensor {} has no {} partner", named, d.a.defined() ? "lora_B" : "lora_A");
      if (d.a.dim(0) != d.b.dim(1))
        fail("adapter", "tensor {}: rank {} but its lora_B has rank {}", named, d.a.dim(0), d.b.dim(1));
      any = true;
    }
  if (!any) fail("adapter", "adapter holds no LoRA weights");
  lora_ = std::move(lora);
}

void LlamaModel::clear_adapter() { lora_.clear(); }

void LlamaModel::project(int64_t layer, int index, const Tensor& dense, const float* x, const float* bias, float* y,
                         int64_t n) const {
  if (quantized_.empty()) {
    cpu::linear(x, dense, bias, y, n);
  } else {
    const QuantTensor& w = quantized_[size_t(layer)][size_t(index)];
    qmatmul_forward(x, w, y, n);
    cpu::add_row_bias(y, bias, n, w.shape[0]);
  }
  if (lora_.empty()) return;
  const LoraDelta& d = lora_[size_t(layer)][size_t(index)];
  if (!d.a.defined()) return;
  const int64_t R = d.a.dim(0), in = d.a.dim(1), out = d.b.dim(0);
  std::vector<float> t(size_t(n * R));      // (n, R) = x · Aᵀ
  std::vector<float> delta(size_t(n * out));  // (n, out) = scale·t · Bᵀ
  cpu::linear_f32(x, d.a.data<float>(), nullptr, t.data(), n, R, in);
  for (float& v : t) v *= d.scale;
  cpu::linear_f32(t.data(), d.b.data<float>(), nullptr, delta.data(), n, out, R);
  cpu::add_inplace(y, delta.data(), n * out);
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
