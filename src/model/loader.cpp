// load_model: opens the source (model_source.h) and materializes every tensor: matrices in the
// weight dtype, norms and biases as owned f32 copies, the stored types summarized.
#include "model/loader.h"

#include "core/error.h"
#include "model/model_source.h"

namespace qlora {

LlamaModelFile materialize(const ModelSource& source, const LoadOptions& options) {
  if (options.weight_dtype != DType::F32 && options.weight_dtype != DType::BF16)
    fail("load", "weight dtype must be f32 or bf16; got {}", dtype_name(options.weight_dtype));
  LlamaModelFile model;
  model.config = source.config();
  model.path = source.path();
  model.format = source.format();
  // Formats without a config.json say what the weights are held in.
  if (model.format == "gguf" || model.format == "llama2c")
    model.config.torch_dtype = options.weight_dtype == DType::BF16 ? "bfloat16" : "float32";
  LlamaWeights& w = model.weights;
  w.layers.resize(size_t(model.config.num_hidden_layers));
  for (LlamaLayerWeights& l : w.layers) l.experts.resize(size_t(model.config.num_local_experts));
  for (const std::string& name : source.tensor_names()) {
    Tensor t = source.load(name);
    Tensor* slot = w.find(name);
    QLORA_ASSERT(slot, "no slot for {}", name);
    if (t.ndim() == 2) *slot = t.dtype() == options.weight_dtype ? t : t.to(options.weight_dtype);
    else *slot = t.dtype() == DType::F32 ? t.clone() : t.to(DType::F32);  // norms and biases: owned f32
  }
  // Tied: the head is the embedding (HF ignores a stored lm_head.weight then, and so do we).
  if (model.config.tie_word_embeddings) w.lm_head = w.embed_tokens;
  model.file_dtype = source.stored_types();
  return model;
}

LlamaModelFile load_model(const std::string& path, const LoadOptions& options) {
  return materialize(ModelSource::open(path), options);
}

}  // namespace qlora
