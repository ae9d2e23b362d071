// Maps HF parameter names back onto LlamaWeights slots.
#include "train/model_export.h"

#include <map>

#include "core/error.h"

namespace qlora {

LlamaModelFile model_file_from_params(TrainModel& model, const LlamaModelFile& source_meta) {
  if (model.options().method != TrainMethod::Full)
    fail("export", "model_file_from_params needs a fully fine-tuned model; this one trained {} adapters",
         train_method_name(model.options().method));
  std::map<std::string, Tensor> by_name;
  for (const Param& p : model.parameters()) by_name[p.name] = model.backend().to_host(p.value).to(DType::F32).clone();
  auto take = [&](const std::string& name) {
    auto it = by_name.find(name);
    if (it == by_name.end()) fail("export", "trained model has no parameter {}", name);
    return it->second;
  };
  auto take_optional = [&](const std::string& name) {
    auto it = by_name.find(name);
    return it == by_name.end() ? Tensor() : it->second;
  };
  LlamaModelFile out;
  out.config = model.config();
  out.path = source_meta.path;
  out.format = source_meta.format;
  out.file_dtype = "f32";
  LlamaWeights& w = out.weights;
  w.embed_tokens = take("model.embed_tokens.weight");
  w.norm = take("model.norm.weight");
  w.lm_head = out.config.tie_word_embeddings ? w.embed_tokens : take("lm_head.weight");
  for (int64_t l = 0; l < out.config.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LlamaLayerWeights lw;
    lw.input_layernorm = take(p + "input_layernorm.weight");
    lw.post_attention_layernorm = take(p + "post_attention_layernorm.weight");
    if (out.config.qk_norm) {
      lw.q_norm = take(p + "self_attn.q_norm.weight");
      lw.k_norm = take(p + "self_attn.k_norm.weight");
    }
    for (int proj = 0; proj < kProjCount; ++proj) {
      lw.projection(proj) = take(p + projection_path(proj) + ".weight");
      if (Tensor* bias = lw.bias(proj)) *bias = take_optional(p + projection_path(proj) + ".bias");
    }
    w.layers.push_back(std::move(lw));
  }
  return out;
}

}  // namespace qlora
