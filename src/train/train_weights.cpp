// Builds TrainWeights from loaded weights according to the method (full | lora | qlora) and the
// compute dtype. Masters are f32 (f64 in f64 mode); with bf16 compute, frozen weights are stored
// bf16, and full fine-tuning keeps an f32 master beside each bf16 compute copy.
#include "train/train_weights.h"

#include "core/error.h"
#include "quant/nf4.h"

namespace qlora {

namespace {

DType master_dtype(DType compute) { return compute == DType::F64 ? DType::F64 : DType::F32; }

// A converted copy with its own storage (never a view of the loaded file, which is released).
Tensor convert(const Tensor& t, DType dtype) {
  Tensor f32 = t.dtype() == DType::F32 || t.dtype() == DType::F64 ? t : t.to(DType::F32);
  Tensor out = f32.to(dtype);
  return out.raw() == t.raw() ? out.clone() : out;
}

struct Builder {
  const TrainModelOptions& options;
  TrainWeights& out;
  DType master;
  bool full;

  // A trainable (full fine-tuning) tensor: returns the compute copy; registers master + grad.
  Tensor trainable(const Tensor& source, const std::string& name, bool decay, Tensor& grad) {
    Tensor master_copy = convert(source, master);
    grad = Tensor::zeros(source.shape(), master);
    out.params.push_back({name, master_copy, grad, decay});
    if (options.compute != DType::BF16 || master_copy.ndim() != 2) return master_copy;
    Tensor compute = master_copy.to(DType::BF16);
    out.refreshes.emplace_back(master_copy, compute);
    return compute;
  }

  // A frozen dense tensor in the compute dtype (norm vectors stay in the master dtype).
  Tensor frozen(const Tensor& source) {
    const DType dtype = options.compute == DType::BF16 && source.ndim() == 2 ? DType::BF16 : master;
    return convert(source, dtype);
  }
};

}  // namespace

TrainWeights build_train_weights(LlamaWeights& w, const LlamaConfig& config, const TrainModelOptions& options) {
  if (options.compute != DType::F32 && options.compute != DType::BF16 && options.compute != DType::F64)
    fail("train", "compute dtype {} not supported; expected f32, bf16 or f64", dtype_name(options.compute));
  TrainWeights out;
  const bool full = options.method == TrainMethod::Full;
  Builder b{options, out, master_dtype(options.compute), full};
  if (!full) options.lora.validate();
  out.tied = w.lm_head.raw() == w.embed_tokens.raw();

  if (full) out.embed = b.trainable(w.embed_tokens, "model.embed_tokens.weight", true, out.grad_embed);
  else out.embed = b.frozen(w.embed_tokens);
  w.embed_tokens = Tensor();

  for (size_t l = 0; l < w.layers.size(); ++l) {
    LlamaLayerWeights& lw = w.layers[l];
    TrainLayer layer;
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    if (full) {
      layer.input_norm = b.trainable(lw.input_layernorm, prefix + "input_layernorm.weight", false, layer.grad_input_norm);
      layer.post_norm =
          b.trainable(lw.post_attention_layernorm, prefix + "post_attention_layernorm.weight", false, layer.grad_post_norm);
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
        lin.weight = b.trainable(weight, lin.name + ".weight", true, lin.grad_weight);
        if (bias && bias->defined()) lin.bias = b.trainable(*bias, lin.name + ".bias", false, lin.grad_bias);
      } else {
        if (options.method == TrainMethod::Qlora) {
          const QuantizeOptions& q = options.quantize;
          lin.qweight = std::make_shared<QuantTensor>(quantize_4bit(weight.to(DType::F32), q.type, q.block_size, q.double_quant));
        } else {
          lin.weight = b.frozen(weight);
        }
        if (bias && bias->defined()) lin.bias = convert(*bias, b.master);
        if (options.lora.targets(std::string(projection_name(p)))) {
          attach_lora(lin, options.lora, b.master);
          const std::string key = "base_model.model." + lin.name;
          out.params.push_back({key + ".lora_A.weight", lin.lora->A, lin.lora->grad_A, true});
          out.params.push_back({key + ".lora_B.weight", lin.lora->B, lin.lora->grad_B, true});
        }
      }
      weight = Tensor();  // release the loaded dense copy
      if (bias) *bias = Tensor();
    }
    out.layers.push_back(std::move(layer));
  }

  if (full) out.norm = b.trainable(w.norm, "model.norm.weight", false, out.grad_norm);
  else out.norm = b.frozen(w.norm);
  if (out.tied) {
    out.lm_head = out.embed;
  } else if (full) {
    out.lm_head = b.trainable(w.lm_head, "lm_head.weight", true, out.grad_lm_head);
  } else {
    out.lm_head = b.frozen(w.lm_head);
  }
  w.lm_head = Tensor();
  w.norm = Tensor();
  if (!full && out.params.empty()) fail("train", "no LoRA adapters: target_modules selects none of the projections");
  (void)config;

  // Bytes of weights as stored.
  auto add = [&out](const Tensor& t) { out.weight_bytes += t.defined() ? t.nbytes() : 0; };
  add(out.embed), add(out.norm);
  if (!out.tied) add(out.lm_head);
  for (const TrainLayer& layer : out.layers) {
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
