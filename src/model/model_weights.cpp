// Builds ModelWeights from loaded weights according to the method (full | lora | qlora, or frozen
// for inference) and the compute dtype. Masters are f32 (f64 in f64 mode); with bf16 compute,
// frozen weights are stored bf16, and full fine-tuning keeps an f32 master beside each bf16 compute
// copy. Everything is prepared on the host, then moved to the backend: frozen tensors one by one,
// trainables into the two flat buffers.
#include "model/model_weights.h"

#include <functional>

#include "core/error.h"
#include "quant/nf4.h"

namespace qlora {

namespace {

DType master_dtype(DType compute) { return compute == DType::F64 ? DType::F64 : DType::F32; }

// Params start at multiples of this many bytes in the flat buffers (cache lines, vector loads).
constexpr size_t kParamAlignBytes = 64;

// A trainable tensor waiting for its place in the flat buffers: its host initial value, and how to
// hand its value and grad views to the layer that uses them.
struct PendingParam {
  std::string name;
  Tensor host_value;
  bool decay = true;
  int64_t block = 0;
  std::function<void(const Tensor& value, const Tensor& grad)> bind;
};

struct Builder {
  Backend& backend;
  const ModelOptions& options;
  DType master;
  std::vector<PendingParam> pending;

  // A trainable tensor (full fine-tuning): `compute` receives what the forward reads (the master
  // itself, or a bf16 copy refreshed after each step), `grad` its gradient.
  void trainable(const Tensor& source, const std::string& name, bool decay, int64_t block, Tensor& compute,
                 Tensor& grad, ModelWeights& out) {
    const bool bf16_copy = options.compute == DType::BF16 && source.ndim() == 2;
    pending.push_back({name, converted(source, master), decay, block,
                       [this, bf16_copy, &compute, &grad, &out](const Tensor& value, const Tensor& g) {
                         grad = g;
                         if (!bf16_copy) {
                           compute = value;
                           return;
                         }
                         compute = backend.zeros(value.shape(), DType::BF16);
                         backend.convert_f32_to_bf16(value.data<float>(), compute.data<uint16_t>(), value.numel());
                         out.refreshes.emplace_back(value, compute);
                       }});
  }

  // A frozen dense tensor on the device: matrices in the compute dtype (an inference model keeps f32
  // or bf16 matrices as stored, the kernels read both), vectors in the master dtype.
  Tensor frozen(const Tensor& source) const {
    DType dtype = master;
    if (source.ndim() == 2) {
      if (options.compute == DType::BF16) dtype = DType::BF16;
      else if (options.frozen && options.compute == DType::F32 && source.dtype() == DType::BF16) dtype = DType::BF16;
    }
    return backend.to_device(converted(source, dtype));
  }

  // `t` in `dtype` on the host (itself when it already is).
  static Tensor converted(const Tensor& t, DType dtype) {
    if (t.dtype() == dtype) return t;
    const Tensor f32 = t.dtype() == DType::F32 || t.dtype() == DType::F64 ? t : t.to(DType::F32);
    return f32.to(dtype);
  }
};

// Lays the pending params out in two flat buffers on the device and binds the views.
void flatten(Builder& b, ModelWeights& out) {
  if (b.pending.empty()) return;
  const size_t elem = dtype_size(b.master);
  std::vector<size_t> offsets;
  size_t total = 0;
  for (const PendingParam& p : b.pending) {
    offsets.push_back(total);
    total += (p.host_value.nbytes() + kParamAlignBytes - 1) / kParamAlignBytes * kParamAlignBytes;
  }
  out.flat_values = b.backend.zeros({int64_t(total / elem)}, b.master);
  out.flat_grads = b.backend.zeros({int64_t(total / elem)}, b.master);
  for (size_t i = 0; i < b.pending.size(); ++i) {
    PendingParam& p = b.pending[i];
    const Tensor value(p.host_value.shape(), b.master, out.flat_values.storage(), offsets[i]);
    const Tensor grad(p.host_value.shape(), b.master, out.flat_grads.storage(), offsets[i]);
    b.backend.upload(value, p.host_value.raw());
    out.params.push_back({p.name, value, grad, p.decay});
    p.bind(value, grad);
    const size_t end = i + 1 < b.pending.size() ? offsets[i + 1] : total;
    if (out.groups.empty() || out.groups.back().block != p.block)
      out.groups.push_back({p.block, i, 0, offsets[i], 0});
    ParamGroup& g = out.groups.back();
    g.param_count += 1;
    g.bytes = end - g.offset;
  }
  b.pending.clear();
}

}  // namespace

ModelWeights build_model_weights(Backend& backend, LlamaWeights& w, const LlamaConfig& config,
                                 const ModelOptions& options) {
  if (options.compute != DType::F32 && options.compute != DType::BF16 && options.compute != DType::F64)
    fail("train", "compute dtype {} not supported; expected f32, bf16 or f64", dtype_name(options.compute));
  ModelWeights out;
  const bool full = options.method == TrainMethod::Full && !options.frozen;
  const bool quantized = options.frozen ? options.quantize.enabled : options.method == TrainMethod::Qlora;
  const bool adapters = !options.frozen && !full;
  Builder b{backend, options, master_dtype(options.compute), {}};
  if (adapters) options.lora.validate();
  out.tied = w.lm_head.raw() == w.embed_tokens.raw();
  const int64_t L = int64_t(w.layers.size());
  out.layers.resize(size_t(L));  // no reallocation below: the bind closures point into it

  if (full) b.trainable(w.embed_tokens, "model.embed_tokens.weight", true, -1, out.embed, out.grad_embed, out);
  else out.embed = b.frozen(w.embed_tokens);

  for (int64_t l = 0; l < L; ++l) {
    LlamaLayerWeights& lw = w.layers[size_t(l)];
    ModelLayer& layer = out.layers[size_t(l)];
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    if (full) {
      b.trainable(lw.input_layernorm, prefix + "input_layernorm.weight", false, l, layer.input_norm,
                  layer.grad_input_norm, out);
      b.trainable(lw.post_attention_layernorm, prefix + "post_attention_layernorm.weight", false, l, layer.post_norm,
                  layer.grad_post_norm, out);
    } else {
      layer.input_norm = b.frozen(lw.input_layernorm);
      layer.post_norm = b.frozen(lw.post_attention_layernorm);
    }
    for (int p = 0; p < kProjCount; ++p) {
      Linear& lin = layer.linears[size_t(p)];
      Tensor& weight = lw.projection(p);
      lin.name = prefix + projection_path(p);
      lin.out = weight.dim(0);
      lin.in = weight.dim(1);
      Tensor* bias = lw.bias(p);
      if (full) {
        lin.train_weight = true;
        b.trainable(weight, lin.name + ".weight", true, l, lin.weight, lin.grad_weight, out);
        if (bias && bias->defined()) b.trainable(*bias, lin.name + ".bias", false, l, lin.bias, lin.grad_bias, out);
      } else {
        if (quantized) {
          const QuantizeOptions& q = options.quantize;
          lin.qweight =
              std::make_shared<QuantTensor>(backend.to_device(quantize_4bit(weight, q.type, q.block_size, q.double_quant)));
        } else {
          lin.weight = b.frozen(weight);
        }
        if (bias && bias->defined()) lin.bias = backend.to_device(Builder::converted(*bias, b.master));
        if (adapters && options.lora.targets(std::string(projection_name(p)))) {
          attach_lora(lin, options.lora, b.master);  // host A (PEFT init) and B = 0
          LoraAdapter& a = *lin.lora;
          const std::string key = "base_model.model." + lin.name;
          b.pending.push_back({key + ".lora_A.weight", a.A, true, l, [&a](const Tensor& v, const Tensor& g) {
                                 a.A = v, a.grad_A = g;
                               }});
          b.pending.push_back({key + ".lora_B.weight", a.B, true, l, [&a](const Tensor& v, const Tensor& g) {
                                 a.B = v, a.grad_B = g;
                               }});
        }
      }
      weight = Tensor();  // release the loaded dense copy
      if (bias) *bias = Tensor();
    }
  }

  if (full) b.trainable(w.norm, "model.norm.weight", false, L, out.norm, out.grad_norm, out);
  else out.norm = b.frozen(w.norm);
  if (out.tied) {
    // The head reads the embedding: bound once the embedding has its place.
  } else if (full) {
    b.trainable(w.lm_head, "lm_head.weight", true, L, out.lm_head, out.grad_lm_head, out);
  } else {
    out.lm_head = b.frozen(w.lm_head);
  }
  w.lm_head = Tensor();
  w.norm = Tensor();
  w.embed_tokens = Tensor();
  if (adapters && b.pending.empty())
    fail("train", "no LoRA adapters: target_modules selects none of the projections");
  (void)config;
  flatten(b, out);
  if (out.tied) out.lm_head = out.embed;

  // Bytes of weights as stored.
  auto add = [&out](const Tensor& t) { out.weight_bytes += t.defined() ? t.nbytes() : 0; };
  add(out.embed), add(out.norm);
  if (!out.tied) add(out.lm_head);
  for (const ModelLayer& layer : out.layers) {
    add(layer.input_norm), add(layer.post_norm);
    for (const Linear& lin : layer.linears) {
      add(lin.weight), add(lin.bias);
      if (lin.qweight)
        out.weight_bytes += size_t(double(lin.qweight->numel()) * lin.qweight->bits_per_param() / 8.0);
    }
  }
  return out;
}

}  // namespace qlora
