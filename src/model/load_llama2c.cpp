// llama2.c checkpoint: config from the 7-int header (rms_norm_eps 1e-5, rope_theta 10000,
// bos 1, eos 2 as run.c assumes), tensors sliced out of the stacked per-layer arrays. wq/wk rows
// are in interleaved RoPE order (run.c rotates adjacent pairs) and are permuted to HF order.
#include "core/error.h"
#include "io/llama2c.h"
#include "model/load_common.h"
#include "model/model_source.h"

namespace qlora {

ModelSource open_llama2c_model(const std::string& path) {
  auto held = std::make_shared<const Llama2cCheckpoint>(Llama2cCheckpoint::open(path));
  const Llama2cCheckpoint& ck = *held;
  const Llama2cHeader& h = ck.header;
  LlamaConfig c;
  c.model_type = "llama";
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = h.vocab_size;
  c.hidden_size = h.dim;
  c.intermediate_size = h.hidden_dim;
  c.num_hidden_layers = h.n_layers;
  c.num_attention_heads = h.n_heads;
  c.num_key_value_heads = h.n_kv_heads;
  c.head_dim = h.head_size();
  c.max_position_embeddings = h.seq_len;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = h.shared_classifier;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.validate(path);

  TensorLookup lookup = [held, path](const std::string& hf) -> std::optional<SourceTensor> {
    const Llama2cCheckpoint& ck = *held;
    const Llama2cHeader& h = ck.header;
    Tensor t;
    int64_t rope_heads = 0;
    if (hf == "model.embed_tokens.weight") {
      t = ck.token_embedding;
    } else if (hf == "model.norm.weight") {
      t = ck.rms_final;
    } else if (hf == "lm_head.weight") {
      t = ck.wcls;
    } else {
      // model.layers.N.<suffix>
      const size_t start = std::string("model.layers.").size();
      const size_t dot = hf.find('.', start);
      const int64_t l = std::stoll(hf.substr(start, dot - start));
      const std::string suffix = hf.substr(dot + 1);
      auto layer = [l](const Tensor& stacked) {
        Shape shape(stacked.shape().begin() + 1, stacked.shape().end());
        return stacked.slice_rows(l, l + 1).reshape(shape);
      };
      if (suffix == "input_layernorm.weight") t = layer(ck.rms_att);
      else if (suffix == "self_attn.q_proj.weight") t = layer(ck.wq), rope_heads = h.n_heads;
      else if (suffix == "self_attn.k_proj.weight") t = layer(ck.wk), rope_heads = h.n_kv_heads;
      else if (suffix == "self_attn.v_proj.weight") t = layer(ck.wv);
      else if (suffix == "self_attn.o_proj.weight") t = layer(ck.wo);
      else if (suffix == "post_attention_layernorm.weight") t = layer(ck.rms_ffn);
      else if (suffix == "mlp.gate_proj.weight") t = layer(ck.w1);
      else if (suffix == "mlp.down_proj.weight") t = layer(ck.w2);
      else if (suffix == "mlp.up_proj.weight") t = layer(ck.w3);
      else return std::nullopt;
    }
    SourceTensor src;
    src.shape = t.shape();
    src.file = path;
    src.name_in_file = hf;
    src.stored_type = "f32";
    src.rope_heads = rope_heads;
    src.load = [t] { return t; };
    return src;
  };
  return ModelSource(std::move(c), path, "llama2c", path, std::move(lookup));
}

}  // namespace qlora
