// LlamaWeights: the tensors of a Llama-family model, in Hugging Face orientation
// (linear weights (out, in); q/k rows in HF's rotate_half order), whatever file they came from.
#pragma once
#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/projections.h"
#include "core/tensor.h"
#include "model/config.h"

namespace qlora {

struct LlamaLayerWeights {
  Tensor input_layernorm;           // (C)
  Tensor q_proj, k_proj, v_proj;    // (H*D, C), (Hkv*D, C), (Hkv*D, C)
  Tensor q_bias, k_bias, v_bias;    // (H*D), (Hkv*D), (Hkv*D); only when attention_bias
  Tensor o_proj;                    // (C, H*D)
  Tensor q_norm, k_norm;            // (D) per-head RMSNorm weights; only when qk_norm (Qwen3)
  Tensor post_attention_layernorm;  // (C)
  Tensor gate_proj, up_proj;        // (F, C); dense MLP only
  Tensor down_proj;                 // (C, F)
  // MoE (config.moe()): the router (E, C) and per expert {gate (w1), up (w3), down (w2)}.
  Tensor router;
  std::vector<std::array<Tensor, 3>> experts;

  // Projection `index` (ProjectionIndex order), and its bias (q/k/v only; null for the others).
  Tensor& projection(int index);
  const Tensor& projection(int index) const;
  Tensor* bias(int index);
  const Tensor* bias(int index) const;
};

// The names of a sparse MLP below "model.layers.{i}.": the router, and expert e's gate, up and
// down projections (`part` 0, 1, 2). Mixtral: "block_sparse_moe.gate",
// "block_sparse_moe.experts.{e}.w1|w3|w2"; Qwen3-MoE: "mlp.gate", "mlp.experts.{e}.gate_proj|up_proj|down_proj".
std::string router_path(const std::string& model_type);
std::string expert_path(const std::string& model_type, int64_t expert, int part);
// The leaf name of an expert's part, as PEFT's target_modules spell it: Mixtral "w1" | "w3" | "w2",
// Qwen3-MoE "gate_proj" | "up_proj" | "down_proj". The router's leaf is "gate" in both.
std::string expert_part_name(const std::string& model_type, int part);
// Parses a suffix "{experts}.{e}.{part}.weight" of either family into (e, part); false otherwise.
bool parse_expert_path(const std::string& suffix, int64_t& expert, int& part);

// A linear module of one decoder layer, as a PEFT key names it below "model.layers.{i}."
// ("self_attn.q_proj", "mlp.down_proj", "block_sparse_moe.gate", "mlp.experts.3.up_proj").
struct LayerModule {
  enum class Kind { Projection, Router, Expert };
  Kind kind = Kind::Projection;
  int projection = -1;  // Projection: its core/projections.h index
  int64_t expert = -1;  // Expert: its index, and its part (0 gate, 1 up, 2 down)
  int part = -1;
  int64_t out = 0, in = 0;  // the weight's (out, in)
};
// The module `path` names in layer `layer` of a model with config `c`; nullopt when that layer has
// none: a dense MLP name on a sparse layer, a router or expert name on a dense one, the other MoE
// family's names, an expert index beyond the count, or a layer index out of range.
std::optional<LayerModule> find_layer_module(const LlamaConfig& c, int64_t layer, std::string_view path);

struct LlamaWeights {
  Tensor embed_tokens;  // (V, C)
  std::vector<LlamaLayerWeights> layers;
  Tensor norm;          // (C)
  Tensor lm_head;       // (V, C); shares storage with embed_tokens when tied

  // The slot of a Hugging Face tensor name ("model.layers.3.mlp.up_proj.weight",
  // "model.layers.3.block_sparse_moe.experts.5.w1.weight", "model.layers.3.mlp.experts.5.up_proj.weight"),
  // or null when no slot has that name (or the layer or expert index is beyond `layers` or a layer's
  // `experts`).
  Tensor* find(const std::string& hf_name);
};

// A loaded model: its config, its weights and where it came from.
struct LlamaModelFile {
  LlamaConfig config;
  LlamaWeights weights;
  std::string path;        // the file or folder it was loaded from
  std::string format;      // "hf" | "gguf" | "llama2c"
  std::string file_dtype;  // dtype(s) as stored, e.g. "bf16", "Q4_1+Q8_0+F32"
};

}  // namespace qlora
