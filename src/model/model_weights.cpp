// Builds ModelWeights from loaded weights according to the method (full | lora | qlora, or frozen
// for inference) and the compute dtype. Masters are f32 (f64 in f64 mode); with bf16 compute,
// frozen weights are stored bf16, and full fine-tuning keeps an f32 master beside each bf16 compute
// copy. Everything is prepared on the host, then moved to the backend: frozen tensors one by one,
// trainables into the two flat buffers.
#include "model/model_weights.h"

#include "core/error.h"
#include "quant/nf4.h"

namespace qlora {

namespace {

DType master_dtype(DType compute) { return compute == DType::F64 ? DType::F64 : DType::F32; }

// Params start at multiples of this many bytes in the flat buffers (cache lines, vector loads).
constexpr size_t kParamAlignBytes = 64;

// The trainable parameters in registration order, as (shape, group) before any data is converted:
// full fine-tuning registers the embedding, each layer's two norms and its projections' weights
// and biases, the final norm and an untied head; LoRA registers A then B of each targeted
// projection, layer by layer. build_model_weights registers in this order and checks each shape
// against the plan.
struct PlannedParam {
  Shape shape;
  int64_t block = 0;
};

std::vector<PlannedParam> plan_params(const LlamaWeights& w, const ModelOptions& options, bool full, bool adapters,
                                      bool tied) {
  std::vector<PlannedParam> plan;
  const int64_t L = int64_t(w.layers.size());
  if (full) {
    plan.push_back({w.embed_tokens.shape(), -1});
    for (int64_t l = 0; l < L; ++l) {
      const LlamaLayerWeights& lw = w.layers[size_t(l)];
      plan.push_back({lw.input_layernorm.shape(), l});
      plan.push_back({lw.post_attention_layernorm.shape(), l});
      for (int p = 0; p < kProjCount; ++p) {
        plan.push_back({lw.projection(p).shape(), l});
        if (lw.bias(p) && lw.bias(p)->defined()) plan.push_back({lw.bias(p)->shape(), l});
      }
    }
    plan.push_back({w.norm.shape(), L});
    if (!tied) plan.push_back({w.lm_head.shape(), L});
  } else if (adapters) {
    for (int64_t l = 0; l < L; ++l)
      for (int p = 0; p < kProjCount; ++p) {
        if (!options.lora.targets(std::string(projection_name(p)))) continue;
        const Tensor& weight = w.layers[size_t(l)].projection(p);
        plan.push_back({{options.lora.r, weight.dim(1)}, l});  // A (R, K)
        plan.push_back({{weight.dim(0), options.lora.r}, l});  // B (O, R)
      }
  }
  return plan;
}

struct Builder {
  Backend& backend;
  const ModelOptions& options;
  DType master;
  ModelWeights& out;
  std::vector<PlannedParam> plan;
  std::vector<size_t> offsets;  // byte offset of each planned param in the flat buffers

  // Allocates the flat buffers for the plan. Their pages are untouched until a param is written,
  // so loading does not hold the dense source and a full copy of it at once.
  void allocate_flat() {
    if (plan.empty()) return;
    const size_t elem = dtype_size(master);
    size_t total = 0;
    for (const PlannedParam& p : plan) {
      offsets.push_back(total);
      total += (size_t(shape_numel(p.shape)) * elem + kParamAlignBytes - 1) / kParamAlignBytes * kParamAlignBytes;
    }
    out.flat_values = backend.zeros({int64_t(total / elem)}, master);
    out.flat_grads = backend.zeros({int64_t(total / elem)}, master);
    for (size_t i = 0; i < plan.size(); ++i) {
      const size_t end = i + 1 < plan.size() ? offsets[i + 1] : total;
      if (out.groups.empty() || out.groups.back().block != plan[i].block)
        out.groups.push_back({plan[i].block, i, 0, offsets[i], 0});
      ParamGroup& g = out.groups.back();
      g.param_count += 1;
      g.bytes = end - g.offset;
    }
  }

  // The next planned param: its value (initialised from `host`, converted to the master dtype) and
  // grad as views of the flat buffers.
  Param& add_param(const std::string& name, const Tensor& host, bool decay) {
    const size_t i = out.params.size();
    QLORA_ASSERT(i < plan.size() && plan[i].shape == host.shape(), "param {} {} does not follow the plan", name,
                 host.describe());
    const Tensor value(host.shape(), master, out.flat_values.storage(), offsets[i]);
    const Tensor grad(host.shape(), master, out.flat_grads.storage(), offsets[i]);
    backend.upload(value, converted(host, master).raw());
    out.params.push_back({name, value, grad, decay});
    return out.params.back();
  }

  // A trainable tensor (full fine-tuning): `compute` receives what the forward reads (the master
  // itself, or a bf16 copy refreshed after each step), `grad` its gradient.
  void trainable(const Tensor& source, const std::string& name, bool decay, Tensor& compute, Tensor& grad) {
    const Param& p = add_param(name, source, decay);
    grad = p.grad;
    if (options.compute != DType::BF16 || source.ndim() != 2) {
      compute = p.value;
      return;
    }
    compute = backend.zeros(p.value.shape(), DType::BF16);
    backend.convert_f32_to_bf16(p.value.data<float>(), compute.data<uint16_t>(), p.value.numel());
    out.refreshes.emplace_back(p.value, compute);
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

}  // namespace

ModelWeights build_model_weights(Backend& backend, LlamaWeights& w, const ModelOptions& options) {
  if (options.compute != DType::F32 && options.compute != DType::BF16 && options.compute != DType::F64)
    fail("train", "compute dtype {} not supported; expected f32, bf16 or f64", dtype_name(options.compute));
  ModelWeights out;
  const bool full = options.method == TrainMethod::Full && !options.frozen;
  const bool quantized = options.frozen ? options.quantize.enabled : options.method == TrainMethod::Qlora;
  const bool adapters = !options.frozen && !full;
  if (adapters) options.lora.validate();
  out.tied = w.lm_head.raw() == w.embed_tokens.raw();
  Builder b{backend, options, master_dtype(options.compute), out, {}, {}};
  b.plan = plan_params(w, options, full, adapters, out.tied);
  if (adapters && b.plan.empty()) fail("train", "no LoRA adapters: target_modules selects none of the projections");
  b.allocate_flat();
  const int64_t L = int64_t(w.layers.size());
  out.layers.resize(size_t(L));

  if (full) b.trainable(w.embed_tokens, "model.embed_tokens.weight", true, out.embed, out.grad_embed);
  else out.embed = b.frozen(w.embed_tokens);
  if (!out.tied) w.embed_tokens = Tensor();  // tied: the head below still reads it

  for (int64_t l = 0; l < L; ++l) {
    LlamaLayerWeights& lw = w.layers[size_t(l)];
    ModelLayer& layer = out.layers[size_t(l)];
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    if (full) {
      b.trainable(lw.input_layernorm, prefix + "input_layernorm.weight", false, layer.input_norm, layer.grad_input_norm);
      b.trainable(lw.post_attention_layernorm, prefix + "post_attention_layernorm.weight", false, layer.post_norm,
                  layer.grad_post_norm);
    } else {
      layer.input_norm = b.frozen(lw.input_layernorm);
      layer.post_norm = b.frozen(lw.post_attention_layernorm);
    }
    lw.input_layernorm = lw.post_attention_layernorm = Tensor();
    for (int p = 0; p < kProjCount; ++p) {
      Linear& lin = layer.linears[size_t(p)];
      Tensor& weight = lw.projection(p);
      lin.name = prefix + projection_path(p);
      lin.out = weight.dim(0);
      lin.in = weight.dim(1);
      Tensor* bias = lw.bias(p);
      if (full) {
        lin.train_weight = true;
        b.trainable(weight, lin.name + ".weight", true, lin.weight, lin.grad_weight);
        if (bias && bias->defined()) b.trainable(*bias, lin.name + ".bias", false, lin.bias, lin.grad_bias);
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
          const Param& pa = b.add_param(key + ".lora_A.weight", a.A, true);
          a.A = pa.value, a.grad_A = pa.grad;
          const Param& pb = b.add_param(key + ".lora_B.weight", a.B, true);
          a.B = pb.value, a.grad_B = pb.grad;
        }
      }
      weight = Tensor();  // release the loaded dense copy
      if (bias) *bias = Tensor();
    }
  }

  if (full) b.trainable(w.norm, "model.norm.weight", false, out.norm, out.grad_norm);
  else out.norm = b.frozen(w.norm);
  if (out.tied) out.lm_head = out.embed;
  else if (full) b.trainable(w.lm_head, "lm_head.weight", true, out.lm_head, out.grad_lm_head);
  else out.lm_head = b.frozen(w.lm_head);
  w.lm_head = Tensor();
  w.norm = Tensor();
  w.embed_tokens = Tensor();
  QLORA_ASSERT(out.params.size() == b.plan.size(), "{} params registered, {} planned", out.params.size(), b.plan.size());

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
