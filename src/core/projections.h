// The seven linear projections of a Llama-family block under Hugging Face's module names, in one
// table: the loaders, LoRA targets, the PEFT reader, the inference and training engines, the
// exporters and the memory estimator all read their names and order from here.
// Tested in tests/unit/test_config.cpp (names, paths, lookup).
#pragma once
#include <array>
#include <string>
#include <string_view>
#include <vector>

namespace qlora {

// The order in which every per-layer array of projections is held.
enum ProjectionIndex : int { kProjQ, kProjK, kProjV, kProjO, kProjGate, kProjUp, kProjDown, kProjCount };

inline constexpr std::array<std::string_view, kProjCount> kProjectionNames = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

// "q_proj", ...
inline std::string_view projection_name(int index) { return kProjectionNames[size_t(index)]; }
// The parent module: "self_attn" for q/k/v/o, "mlp" for gate/up/down.
inline std::string_view projection_parent(int index) { return index <= kProjO ? "self_attn" : "mlp"; }
// "self_attn.q_proj", ...: the module path below "model.layers.{i}.".
inline std::string projection_path(int index) {
  return std::string(projection_parent(index)) + "." + std::string(projection_name(index));
}
// The index of a short name ("q_proj") or -1.
inline int projection_index(std::string_view name) {
  for (int i = 0; i < kProjCount; ++i)
    if (kProjectionNames[size_t(i)] == name) return i;
  return -1;
}
// Every short name, in order (the default LoRA targets: all seven, as QLoRA trains them).
inline std::vector<std::string> all_projection_names() {
  return std::vector<std::string>(kProjectionNames.begin(), kProjectionNames.end());
}
// "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj", for error messages.
inline std::string projection_list() {
  std::string out;
  for (int i = 0; i < kProjCount; ++i) out += (i ? ", " : "") + std::string(kProjectionNames[size_t(i)]);
  return out;
}

// The LoRA target names of an MoE layer's other linears, as PEFT spells them: the router "gate"
// and Mixtral's experts "w1" (gate), "w3" (up), "w2" (down). Qwen3-MoE's experts are gate_proj,
// up_proj and down_proj, the names above (they select a dense layer's MLP as well).
inline constexpr std::string_view kMoeModuleList = "gate, w1, w2, w3";
inline bool is_moe_module_name(std::string_view name) {
  return name == "gate" || name == "w1" || name == "w2" || name == "w3";
}

}  // namespace qlora
