// PEFT LoRA adapters on disk, as `peft` saves and loads them: a folder with adapter_config.json
// (peft_type "LORA", r, lora_alpha, lora_dropout, target_modules, use_rslora, bias,
// base_model_name_or_path, task_type "CAUSAL_LM", ...) and adapter_model.safetensors whose keys are
// get_peft_model_state_dict's: "base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight"
// (R, in) and "...lora_B.weight" (out, R). Reading validates the config fields and that every
// module has both A and B with matching rank; errors name the file and key. Writing is atomic:
// a new folder is built beside and renamed into place; in an existing folder (which may hold other
// files) each of the two files is replaced atomically (temp file, fsync, rename).
// Tested in tests/unit/test_peft_adapter.cpp and, against
// `peft` itself, tests/e2e/test_peft_roundtrip.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace qlora {

struct PeftAdapterConfig {
  int64_t r = 8;
  double lora_alpha = 16;
  double lora_dropout = 0.0;
  bool use_rslora = false;
  std::vector<std::string> target_modules;  // e.g. {"q_proj", "v_proj"}
  std::string base_model_name_or_path;
  double scale() const;  // alpha / r, or alpha / sqrt(r) with rsLoRA
};

struct PeftAdapter {
  PeftAdapterConfig config;
  std::vector<std::pair<std::string, Tensor>> tensors;  // PEFT keys, f32, in a stable order
  // The (A, B) pair of a module ("model.layers.3.self_attn.q_proj"); undefined tensors when absent.
  std::pair<Tensor, Tensor> module(const std::string& module_name) const;
};

// A LoRA key "base_model.model.model.layers.{i}.{module}.lora_{A|B}.weight" split into its parts.
struct PeftLoraKey {
  int64_t layer = -1;
  std::string module;  // below "model.layers.{i}.": "self_attn.q_proj", "block_sparse_moe.experts.3.w1"
  bool is_a = false;
};
// Throws Error (under `stage`) naming the key when it is not a decoder-layer LoRA weight. The layer
// index is not checked against a model here; model/weights.h find_layer_module does that.
PeftLoraKey parse_peft_lora_key(const std::string& key, std::string_view stage);

// Reads DIR/adapter_config.json and DIR/adapter_model.safetensors (f16/bf16 tensors become f32).
PeftAdapter read_peft_adapter(const std::string& dir);
// Writes both files into DIR (created; an existing adapter there is replaced atomically).
void write_peft_adapter(const std::string& dir, const PeftAdapter& adapter);

}  // namespace qlora
