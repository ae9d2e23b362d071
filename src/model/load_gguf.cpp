// GGUF model: config from the {arch}.* and tokenizer.ggml.* metadata, tensors by llama.cpp's
// names (token_embd, blk.N.attn_q, ..., output_norm, output). Architecture "llama" stores q/k
// rows in interleaved RoPE order (convert_hf_to_gguf.py permutes them); we permute them back.
// "qwen2" and "qwen3" are stored in HF order (NEOX-style RoPE) and are not permuted.
// Mixture of experts as llama.cpp stores it: "llama" with {arch}.expert_count is Mixtral, and
// "qwen3moe" is Qwen3-MoE; a layer's router is ffn_gate_inp (E, C) and its experts are stacked,
// ffn_gate_exps / ffn_up_exps (E, F, C) and ffn_down_exps (E, C, F). Each expert's matrix is read
// as its own slice of the stack (GgufFile::load_slice), under the HF per-expert name.
#include <map>

#include "core/error.h"
#include "io/ggml_dequant.h"
#include "io/gguf.h"
#include "model/load_common.h"
#include "model/model_source.h"
#include "model/weights.h"

namespace qlora {
namespace {

// HF suffix (after model.layers.N.) -> GGUF suffix (after blk.N.).
const std::map<std::string, std::string>& layer_names() {
  static const std::map<std::string, std::string> names = [] {
    std::map<std::string, std::string> m = {{"input_layernorm.weight", "attn_norm.weight"},
                                            {"post_attention_layernorm.weight", "ffn_norm.weight"},
                                            {"self_attn.q_norm.weight", "attn_q_norm.weight"},
                                            {"self_attn.k_norm.weight", "attn_k_norm.weight"}};
    for (int p = 0; p < kProjCount; ++p) {
      const std::string gguf(gguf_projection_name(p));
      m[projection_path(p) + ".weight"] = gguf + ".weight";
      if (p <= kProjV) m[projection_path(p) + ".bias"] = gguf + ".bias";
    }
    return m;
  }();
  return names;
}

// Where an HF tensor lives in the GGUF: a tensor name, and the slice of it (an expert of a stacked
// ffn_*_exps tensor) or -1 for the whole tensor.
struct GgufPlace {
  std::string name;
  int64_t slice = -1;
};

std::optional<GgufPlace> gguf_place(const std::string& hf, const LlamaConfig& c) {
  if (hf == "model.embed_tokens.weight") return GgufPlace{"token_embd.weight"};
  if (hf == "model.norm.weight") return GgufPlace{"output_norm.weight"};
  if (hf == "lm_head.weight") return GgufPlace{"output.weight"};
  const std::string prefix = "model.layers.";
  if (hf.rfind(prefix, 0) != 0) return std::nullopt;
  const size_t dot = hf.find('.', prefix.size());
  if (dot == std::string::npos) return std::nullopt;
  const std::string layer = hf.substr(prefix.size(), dot - prefix.size()), suffix = hf.substr(dot + 1);
  const std::string blk = "blk." + layer + ".";
  if (c.moe()) {
    if (suffix == router_path(c.model_type) + ".weight") return GgufPlace{blk + "ffn_gate_inp.weight"};
    int64_t expert = -1;
    int part = -1;
    if (parse_expert_path(suffix, expert, part) && suffix == expert_path(c.model_type, expert, part) + ".weight")
      return GgufPlace{blk + std::string(gguf_expert_stack_name(part)) + ".weight", expert};
  }
  auto it = layer_names().find(suffix);
  if (it == layer_names().end()) return std::nullopt;
  return GgufPlace{blk + it->second};
}

LlamaConfig config_from_gguf(const GgufFile& g) {
  const std::string& path = g.path();
  const std::string arch = g.get("general.architecture").as_string("general.architecture");
  if (arch != "llama" && arch != "qwen2" && arch != "qwen3" && arch != "qwen3moe")
    fail("load", "unsupported GGUF architecture {} in {}; supported: llama, qwen2, qwen3, qwen3moe (Mixtral is "
                 "llama with experts)",
         arch, path);
  auto key = [&](const std::string& k) { return arch + "." + k; };
  auto get_int = [&](const std::string& k) { return g.get(key(k)).as_int(key(k)); };
  auto get_int_or = [&](const std::string& k, int64_t fallback) {
    return g.has(key(k)) ? g.get(key(k)).as_int(key(k)) : fallback;
  };

  LlamaConfig c;
  const int64_t experts = get_int_or("expert_count", 0);
  if (arch == "qwen3moe" && experts <= 0)
    fail("load", "{}: {} is missing or not positive; a qwen3moe model has experts", path, key("expert_count"));
  if (arch == "llama" && experts > 0) {
    c.model_type = "mixtral", c.architecture = "MixtralForCausalLM";
  } else if (arch == "qwen3moe") {
    c.model_type = "qwen3_moe", c.architecture = "Qwen3MoeForCausalLM";
  } else {
    c.model_type = arch;
    c.architecture = arch == "qwen2" ? "Qwen2ForCausalLM" : arch == "qwen3" ? "Qwen3ForCausalLM" : "LlamaForCausalLM";
  }
  c.qk_norm = arch == "qwen3" || arch == "qwen3moe";
  c.num_hidden_layers = get_int("block_count");
  c.hidden_size = get_int("embedding_length");
  c.intermediate_size = get_int("feed_forward_length");
  c.num_attention_heads = get_int("attention.head_count");
  c.num_key_value_heads = get_int_or("attention.head_count_kv", c.num_attention_heads);
  if (c.num_attention_heads <= 0)
    fail("load", "{}: {} must be positive; got {}", path, key("attention.head_count"), c.num_attention_heads);
  c.head_dim = get_int_or("attention.key_length", c.hidden_size / c.num_attention_heads);
  const int64_t rope_dims = get_int_or("rope.dimension_count", c.head_dim);
  if (rope_dims != c.head_dim)
    fail("load", "{}: {} is {}; only full-head RoPE is supported (expected {})", path,
         key("rope.dimension_count"), rope_dims, c.head_dim);
  c.rms_norm_eps = g.get(key("attention.layer_norm_rms_epsilon")).as_float(key("attention.layer_norm_rms_epsilon"));
  c.rope_theta = g.has(key("rope.freq_base")) ? g.get(key("rope.freq_base")).as_float(key("rope.freq_base")) : 10000.0;
  c.max_position_embeddings = get_int_or("context_length", c.max_position_embeddings);

  if (g.has(key("rope.scaling.type"))) {
    const std::string type = g.get(key("rope.scaling.type")).as_string(key("rope.scaling.type"));
    if (type == "linear") {
      c.rope_scaling.type = "linear";
      c.rope_scaling.factor = g.get(key("rope.scaling.factor")).as_float(key("rope.scaling.factor"));
    } else if (type != "none") {
      fail("load", "{}: unsupported {} '{}'; supported: none, linear", path, key("rope.scaling.type"), type);
    }
  }
  if (g.find_tensor("rope_freqs.weight"))
    fail("load", "{}: tensor rope_freqs.weight (Llama 3.1 frequency scaling baked into the GGUF) is not "
                 "supported; load the Hugging Face folder instead",
         path);

  if (g.has(key("vocab_size"))) {
    c.vocab_size = get_int("vocab_size");
  } else if (g.has("tokenizer.ggml.tokens")) {
    c.vocab_size = int64_t(g.get("tokenizer.ggml.tokens").as_array("tokenizer.ggml.tokens").size());
  } else if (const auto* emb = g.find_tensor("token_embd.weight")) {
    c.vocab_size = emb->shape[0];
  }
  if (g.has("tokenizer.ggml.bos_token_id"))
    c.bos_token_id = g.get("tokenizer.ggml.bos_token_id").as_int("tokenizer.ggml.bos_token_id");
  if (g.has("tokenizer.ggml.eos_token_id"))
    c.eos_token_ids = {g.get("tokenizer.ggml.eos_token_id").as_int("tokenizer.ggml.eos_token_id")};
  if (g.has("tokenizer.ggml.padding_token_id"))
    c.pad_token_id = g.get("tokenizer.ggml.padding_token_id").as_int("tokenizer.ggml.padding_token_id");

  if (experts > 0) {
    // llama.cpp runs every layer sparse, softmax over the router, the top k renormalised (its
    // norm_w): Mixtral's routing, and Qwen3-MoE's with norm_topk_prob.
    c.num_local_experts = experts;
    c.num_experts_per_tok = get_int("expert_used_count");
    c.moe_intermediate_size = arch == "qwen3moe" ? get_int("expert_feed_forward_length") : c.intermediate_size;
    c.norm_topk_prob = true;
    c.router_aux_loss_coef = 0.001;  // transformers' default for both; GGUF does not store it
  }

  c.tie_word_embeddings = g.find_tensor("output.weight") == nullptr;
  c.attention_bias = arch == "qwen2" || g.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.validate(path);
  return c;
}

}  // namespace

ModelSource open_gguf_model(const std::string& path) {
  auto g = std::make_shared<const GgufFile>(GgufFile::open(path));
  const LlamaConfig config = config_from_gguf(*g);
  const int64_t H = config.num_attention_heads, Hkv = config.num_key_value_heads;
  const bool interleaved = g->get("general.architecture").as_string("general.architecture") == "llama";

  TensorLookup lookup = [g, path, H, Hkv, interleaved, config](const std::string& hf) -> std::optional<SourceTensor> {
    const std::optional<GgufPlace> place = gguf_place(hf, config);
    if (!place) return std::nullopt;
    const std::string name = place->name;
    const int64_t slice = place->slice;
    const GgufTensorInfo* info = g->find_tensor(name);
    if (!info) return std::nullopt;
    SourceTensor src;
    src.file = path;
    src.name_in_file = name;
    if (slice >= 0) {  // one expert of a stacked tensor (E, out, in)
      if (info->shape.size() != 3 || slice >= info->shape[0])
        fail("load", "{}: tensor {} has shape {}; expected ({}, out, in) stacked experts", path, name,
             shape_str(info->shape), config.num_local_experts);
      src.shape = Shape(info->shape.begin() + 1, info->shape.end());
      src.name_in_file = fmt::format("{}[{}]", name, slice);
      src.stored_type = ggml_type_name(info->type);
      src.load = [g, name, slice] { return g->load_slice(name, slice, /*keep_float_dtype=*/true); };
      src.release = [g, name, slice] { g->release_slice(name, slice); };
      return src;
    }
    src.shape = info->shape;
    src.stored_type = ggml_type_name(info->type);
    if (interleaved) {
      if (hf.find("self_attn.q_proj.") != std::string::npos) src.rope_heads = H;
      if (hf.find("self_attn.k_proj.") != std::string::npos) src.rope_heads = Hkv;
    }
    src.load = [g, name] { return g->load(name, /*keep_float_dtype=*/true); };
    src.release = [g, name] { g->release(name); };
    return src;
  };
  return ModelSource(config, path, "gguf", path, std::move(lookup));
}

}  // namespace qlora
