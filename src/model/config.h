// LlamaConfig: the hyperparameters of a Llama-family model, spelled as Hugging Face's
// config.json spells them (Llama 2/3, Mistral, Mixtral, Qwen2, Qwen3, SmolLM2, TinyLlama). Built from config.json,
// GGUF metadata or a llama2.c header; written back as config.json. Tested in
// tests/unit/test_config.cpp.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace qlora {

// HF `rope_scaling`. type "" = none; "llama3" = Llama 3.1 frequency-dependent scaling;
// "linear" = positions divided by factor.
struct RopeScaling {
  std::string type;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  std::string model_type = "llama";                  // llama | mistral | mixtral | qwen2 | qwen3
  std::string architecture = "LlamaForCausalLM";     // HF `architectures[0]`
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;                           // C
  int64_t intermediate_size = 0;                     // F
  int64_t num_hidden_layers = 0;                     // L
  int64_t num_attention_heads = 0;                   // H
  int64_t num_key_value_heads = 0;                   // Hkv
  int64_t head_dim = 0;                              // D (hidden_size / H unless given)
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;                       // q/k/v biases (Qwen2 has them)
  bool mlp_bias = false;                             // unsupported when true
  bool qk_norm = false;                              // Qwen3: RMSNorm over each head of q and k, before RoPE
  // The sparse MLP of Mixtral and Qwen3-MoE: E SwiGLU experts (gate, up, down; moe_intermediate_size
  // each) and a router; each token goes to its k most probable experts.
  int64_t num_local_experts = 0;                     // E (Qwen3-MoE: num_experts); 0 = a dense MLP
  int64_t num_experts_per_tok = 0;                   // k
  int64_t moe_intermediate_size = 0;                 // an expert's F (Mixtral: intermediate_size)
  bool norm_topk_prob = true;                        // renormalise the k weights to sum 1 (Mixtral always)
  int64_t decoder_sparse_step = 1;                   // Qwen3-MoE: layer l is sparse when (l + 1) % step == 0
  std::vector<int64_t> mlp_only_layers;              // Qwen3-MoE: layers kept dense (intermediate_size)
  double router_aux_loss_coef = 0.0;                 // weight of the load-balancing loss
  bool output_router_logits = false;                 // transformers adds the aux loss only then
  int64_t sliding_window = 0;                        // Mistral; 0 = none
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
  int64_t pad_token_id = -1;
  std::string torch_dtype = "float32";

  // From a parsed config.json; `source` (a file name) is named in every error. Throws Error
  // "unsupported architecture X" for anything but the Llama family.
  static LlamaConfig from_hf_json(const nlohmann::json& json, const std::string& source);
  static LlamaConfig from_hf_file(const std::string& path);
  nlohmann::json to_hf_json() const;
  // Checks internal consistency (heads divide, GQA groups integral ...) and sane upper bounds on
  // every dimension (2^24; layers 2^16, positions 2^31); throws Error naming the key and source.
  void validate(const std::string& source) const;

  bool moe() const { return num_local_experts > 0; }
  // Whether layer l (0 <= l < num_hidden_layers) has the sparse MLP, as transformers'
  // Qwen3MoeDecoderLayer decides.
  bool moe_layer(int64_t l) const;
  int64_t moe_layer_count() const;
  int64_t q_dim() const { return num_attention_heads * head_dim; }
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  // (out, in) features of projection `index` (core/projections.h order).
  std::pair<int64_t, int64_t> projection_shape(int index) const;
  // (out, in) of an expert's part (0 gate, 1 up: (moe_intermediate_size, C); 2 down: the reverse).
  std::pair<int64_t, int64_t> expert_shape(int part) const {
    return part == 2 ? std::pair{hidden_size, moe_intermediate_size} : std::pair{moe_intermediate_size, hidden_size};
  }
  // Total parameters, counting a tied LM head once; throws Error when the count overflows int64.
  int64_t parameter_count() const;
};

}  // namespace qlora
