// Builds ModelWeights from loaded weights according to the method (full | lora | qlora, or frozen
// for inference) and the compute dtype. Masters are f32 (f64 in f64 mode); with bf16 compute,
// frozen weights are stored bf16, and full fine-tuning keeps an f32 master beside each bf16 compute
// copy. Everything is prepared on the host, then moved to the backend: frozen tensors one by one,
// trainables into the two flat buffers.
#include "model/model_weights.h"

#include <optional>
#include <string_view>

#include "core/error.h"
#include "quant/nf4.h"

namespace qlora {

namespace {

DType master_dtype(DType compute) { return compute == DType::F64 ? DType::F64 : DType::F32; }

// Params start at multiples of this many bytes in the flat buffers (cache lines, vector loads).
constexpr size_t kParamAlignBytes = 64;

// The trainable parameters in registration order, as (shape, group) before any data is read: full
// fine-tuning registers every tensor in the source's load order (embedding; per layer the input
// norm, the projections with their biases, the q/k head norms, the post-attention norm; final
// norm; untied head);
// LoRA registers A then B of each targeted projection, layer by layer. build_model_weights
// registers in this order and checks each shape against the plan.
struct PlannedParam {
  Shape shape;
  int64_t block = 0;
};

// The gradients-ready group of a tensor: -1 the embedding, l a layer's, L the final norm and head.
int64_t block_of(const std::string& name, int64_t L) {
  if (name == "model.embed_tokens.weight") return -1;
  constexpr std::string_view kLayers = "model.layers.";
  if (name.rfind(kLayers, 0) != 0) return L;
  return std::stoll(name.substr(kLayers.size()));
}

// Whether projection p of layer l gets an adapter: a target, and a module the layer has (a sparse
// layer has no dense gate/up/down).
bool lora_targets(const LlamaConfig& c, const ModelOptions& options, int64_t l, int p) {
  return options.lora.targets(std::string(projection_name(p))) && !(c.moe_layer(l) && p >= kProjGate);
}
// A sparse layer's router ("gate") and expert parts (PEFT's leaf names, model/weights.h).
bool router_targeted(const ModelOptions& options) { return options.lora.targets("gate"); }
bool expert_part_targeted(const LlamaConfig& c, const ModelOptions& options, int part) {
  return options.lora.targets(expert_part_name(c.model_type, part));
}

std::vector<PlannedParam> plan_params(const ModelSource& src, const ModelOptions& options, bool full,
                                      bool adapters) {
  std::vector<PlannedParam> plan;
  const LlamaConfig& c = src.config();
  const int64_t L = c.num_hidden_layers;
  if (full) {
    for (const std::string& name : src.tensor_names()) plan.push_back({src.expected_shape(name), block_of(name, L)});
  } else if (adapters) {
    // In build order: the projections, then a sparse layer's router and experts.
    for (int64_t l = 0; l < L; ++l) {
      auto adapter = [&](int64_t out, int64_t in) {
        plan.push_back({{options.lora.r, in}, l});   // A (R, K)
        plan.push_back({{out, options.lora.r}, l});  // B (O, R)
      };
      for (int p = 0; p < kProjCount; ++p) {
        if (!lora_targets(c, options, l, p)) continue;
        const auto [out, in] = c.projection_shape(p);
        adapter(out, in);
      }
      if (!c.moe_layer(l)) continue;
      if (router_targeted(options)) adapter(c.num_local_experts, c.hidden_size);
      for (int64_t e = 0; e < c.num_local_experts; ++e)
        for (int part = 0; part < 3; ++part)
          if (expert_part_targeted(c, options, part)) {
            const auto [out, in] = c.expert_shape(part);
            adapter(out, in);
          }
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

  // A frozen dense tensor on the device. Matrices at their own width: bf16 with bf16 compute; with
  // f32 compute a bf16 source stays bf16 (the kernels read bf16 weights exactly, widening in
  // registers or panels) and anything else is f32 (f16 widens exactly; a dequantized GGUF or
  // bitsandbytes tensor is f32 values, which bf16 would round). Vectors in the master dtype.
  Tensor frozen(const Tensor& source) const {
    DType dtype = master;
    if (source.ndim() == 2 && options.compute != DType::F64)
      dtype = options.compute == DType::BF16 || source.dtype() == DType::BF16 ? DType::BF16 : DType::F32;
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

ModelWeights build_model_weights(Backend& backend, const ModelSource& src, const ModelOptions& options) {
  if (options.compute != DType::F32 && options.compute != DType::BF16 && options.compute != DType::F64)
    fail("train", "compute dtype {} not supported; expected f32, bf16 or f64", dtype_name(options.compute));
  const LlamaConfig& c = src.config();
  ModelWeights out;
  const bool full = options.method == TrainMethod::Full && !options.frozen;
  const bool quantized = options.frozen ? options.quantize.enabled : options.method == TrainMethod::Qlora;
  const bool adapters = !options.frozen && !full;
  if (adapters) options.lora.validate();
  out.tied = c.tie_word_embeddings;
  Builder b{backend, options, master_dtype(options.compute), out, {}, {}};
  b.plan = plan_params(src, options, full, adapters);
  if (adapters && b.plan.empty()) fail("train", "no LoRA adapters: target_modules selects none of the projections");
  b.allocate_flat();
  const int64_t L = c.num_hidden_layers;
  out.layers.resize(size_t(L));

  // Each tensor is read from the source, converted or quantized, and its source released: the file
  // pages it touched are dropped even when the kept tensor views them (an unconverted frozen tensor
  // of a read-only mapping faults them back in when it is read), and a tensor the source made
  // (dequantized) may be the kept one itself, so sharing storage says nothing. With bf16 compute the
  // matrices are taken as a bf16 load holds them (rounded once), as transformers loads a model in
  // torch_dtype=bfloat16 before it quantizes or trains it; norms and biases keep full precision.
  auto at_load_width = [&](const Tensor& t) {
    return options.compute == DType::BF16 && t.ndim() == 2 && t.dtype() != DType::BF16 ? t.to(DType::BF16) : t;
  };
  auto load = [&](const std::string& name) { return at_load_width(src.load(name)); };
  auto take_frozen = [&](const std::string& name, Tensor& slot) {
    const Tensor source = src.load(name);
    slot = b.frozen(at_load_width(source));
    src.release(name);
  };
  auto take_trainable = [&](const std::string& name, bool decay, Tensor& compute, Tensor& grad) {
    const Tensor t = load(name);
    b.trainable(t, name, decay, compute, grad);
    src.release(name);  // copied into the flat buffer
  };

  const std::string embed = "model.embed_tokens.weight";
  if (full) take_trainable(embed, true, out.embed, out.grad_embed);
  else take_frozen(embed, out.embed);

  for (int64_t l = 0; l < L; ++l) {
    ModelLayer& layer = out.layers[size_t(l)];
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    if (full) take_trainable(prefix + "input_layernorm.weight", false, layer.input_norm, layer.grad_input_norm);
    else take_frozen(prefix + "input_layernorm.weight", layer.input_norm);
    // A projection's base: trained (full), 4-bit (QLoRA, when `quantizable`) or frozen dense.
    auto base = [&](Linear& lin, const std::string& name, int64_t out_features, int64_t in_features, bool has_bias,
                    bool quantizable) {
      lin.name = name;
      lin.out = out_features;
      lin.in = in_features;
      lin.bf16_products = options.compute == DType::BF16;
      const std::string weight = lin.name + ".weight", bias = lin.name + ".bias";
      if (full) {
        lin.train_weight = true;
        take_trainable(weight, true, lin.weight, lin.grad_weight);
        if (has_bias) take_trainable(bias, false, lin.bias, lin.grad_bias);
        return;
      }
      if (quantized && quantizable) {
        const QuantizeOptions& q = options.quantize;
        // A bitsandbytes 4-bit weight is taken as stored: no dequantize/requantize round trip.
        std::optional<QuantTensor> stored = src.load_quantized(weight);
        if (!stored) {
          const Tensor t = load(weight);
          stored = quantize_4bit(t, q.type, q.block_size, q.double_quant, q.rounding);
        }
        lin.qweight = std::make_shared<QuantTensor>(backend.to_device(*stored));
        src.release(weight);
      } else {
        take_frozen(weight, lin.weight);
      }
      if (has_bias) {
        const Tensor source = src.load(bias);
        lin.bias = backend.to_device(Builder::converted(source, b.master));
        src.release(bias);
      }
    };
    // A LoRA adapter on `lin`, its A and B registered under PEFT's names.
    auto adapt = [&](Linear& lin) {
      attach_lora(lin, options.lora, b.master);  // host A (PEFT init) and B = 0
      LoraAdapter& a = *lin.lora;
      const std::string key = "base_model.model." + lin.name;
      const Param& pa = b.add_param(key + ".lora_A.weight", a.A, true);
      a.A = pa.value, a.grad_A = pa.grad;
      const Param& pb = b.add_param(key + ".lora_B.weight", a.B, true);
      a.B = pb.value, a.grad_B = pb.grad;
    };
    for (int p = 0; p < kProjCount; ++p) {
      if (c.moe_layer(l) && p >= kProjGate) break;  // the experts below replace the dense MLP
      Linear& lin = layer.linears[size_t(p)];
      const auto [out_features, in_features] = c.projection_shape(p);
      base(lin, prefix + projection_path(p), out_features, in_features, c.attention_bias && p <= kProjV, true);
      if (adapters && lora_targets(c, options, l, p)) adapt(lin);
    }
    if (c.moe_layer(l)) {  // the router stays dense (transformers' bitsandbytes path leaves it too)
      base(layer.router, prefix + router_path(c.model_type), c.num_local_experts, c.hidden_size, false, false);
      if (adapters && router_targeted(options)) adapt(layer.router);
      layer.experts.resize(size_t(c.num_local_experts));
      for (int64_t e = 0; e < c.num_local_experts; ++e)
        for (int part = 0; part < 3; ++part) {
          Linear& lin = layer.experts[size_t(e)][size_t(part)];
          const auto [out_features, in_features] = c.expert_shape(part);
          base(lin, prefix + expert_path(c.model_type, e, part), out_features, in_features, false, true);
          if (adapters && expert_part_targeted(c, options, part)) adapt(lin);
        }
    }
    if (c.qk_norm) {
      const std::string q = prefix + "self_attn.q_norm.weight", k = prefix + "self_attn.k_norm.weight";
      if (full) {
        take_trainable(q, false, layer.q_norm, layer.grad_q_norm);
        take_trainable(k, false, layer.k_norm, layer.grad_k_norm);
      } else {
        take_frozen(q, layer.q_norm), take_frozen(k, layer.k_norm);
      }
    }
    if (full) take_trainable(prefix + "post_attention_layernorm.weight", false, layer.post_norm, layer.grad_post_norm);
    else take_frozen(prefix + "post_attention_layernorm.weight", layer.post_norm);
  }

  if (full) take_trainable("model.norm.weight", false, out.norm, out.grad_norm);
  else take_frozen("model.norm.weight", out.norm);
  if (out.tied) out.lm_head = out.embed;
  else if (full) take_trainable("lm_head.weight", true, out.lm_head, out.grad_lm_head);
  else take_frozen("lm_head.weight", out.lm_head);
  QLORA_ASSERT(out.params.size() == b.plan.size(), "{} params registered, {} planned", out.params.size(), b.plan.size());

  // Bytes of weights as stored.
  auto add = [&out](const Tensor& t) { out.weight_bytes += t.defined() ? t.nbytes() : 0; };
  add(out.embed), add(out.norm);
  if (!out.tied) add(out.lm_head);
  auto add_linear = [&](const Linear& lin) {
    add(lin.weight), add(lin.bias);
    if (lin.qweight) out.weight_bytes += size_t(double(lin.qweight->numel()) * lin.qweight->bits_per_param() / 8.0);
  };
  for (const ModelLayer& layer : out.layers) {
    add(layer.input_norm), add(layer.post_norm), add(layer.q_norm), add(layer.k_norm);
    for (const Linear& lin : layer.linears) add_linear(lin);
    add_linear(layer.router);
    for (const auto& expert : layer.experts)
      for (const Linear& lin : expert) add_linear(lin);
  }
  return out;
}

}  // namespace qlora
