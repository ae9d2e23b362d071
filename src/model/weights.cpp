// LlamaLayerWeights' projections by index (core/projections.h order). Tested through the loaders
// and exporters (tests/unit/test_loader.cpp, test_merge_export.cpp).
#include "model/weights.h"

#include <charconv>
#include <string_view>

#include "core/error.h"

namespace qlora {

const Tensor& LlamaLayerWeights::projection(int index) const {
  switch (index) {
    case kProjQ: return q_proj;
    case kProjK: return k_proj;
    case kProjV: return v_proj;
    case kProjO: return o_proj;
    case kProjGate: return gate_proj;
    case kProjUp: return up_proj;
    case kProjDown: return down_proj;
  }
  fail("model", "projection index {} out of range [0, {})", index, int(kProjCount));
}

Tensor& LlamaLayerWeights::projection(int index) {
  return const_cast<Tensor&>(static_cast<const LlamaLayerWeights&>(*this).projection(index));
}

const Tensor* LlamaLayerWeights::bias(int index) const {
  switch (index) {
    case kProjQ: return &q_bias;
    case kProjK: return &k_bias;
    case kProjV: return &v_bias;
    default: return nullptr;
  }
}

Tensor* LlamaLayerWeights::bias(int index) {
  return const_cast<Tensor*>(static_cast<const LlamaLayerWeights&>(*this).bias(index));
}

std::string expert_path(int64_t expert, int part) {
  static constexpr const char* kHfPart[3] = {"w1", "w3", "w2"};  // gate, up, down
  return "block_sparse_moe.experts." + std::to_string(expert) + "." + kHfPart[part];
}

Tensor* LlamaWeights::find(const std::string& name) {
  if (name == "model.embed_tokens.weight") return &embed_tokens;
  if (name == "model.norm.weight") return &norm;
  if (name == "lm_head.weight") return &lm_head;
  constexpr std::string_view kLayers = "model.layers.";
  if (name.rfind(kLayers, 0) != 0) return nullptr;
  int64_t l = -1;
  const char* begin = name.data() + kLayers.size();
  const auto [end, ec] = std::from_chars(begin, name.data() + name.size(), l);
  if (ec != std::errc() || *end != '.' || l < 0 || l >= int64_t(layers.size())) return nullptr;
  const std::string suffix(end + 1);
  LlamaLayerWeights& lw = layers[size_t(l)];
  if (suffix == "input_layernorm.weight") return &lw.input_layernorm;
  if (suffix == "post_attention_layernorm.weight") return &lw.post_attention_layernorm;
  if (suffix == std::string(kRouterPath) + ".weight") return &lw.router;
  constexpr std::string_view kExperts = "block_sparse_moe.experts.";
  if (suffix.rfind(kExperts, 0) == 0) {
    int64_t e = -1;
    const char* eb = suffix.data() + kExperts.size();
    const auto [ee, eec] = std::from_chars(eb, suffix.data() + suffix.size(), e);
    if (eec != std::errc() || e < 0 || e >= int64_t(lw.experts.size())) return nullptr;
    for (int part = 0; part < 3; ++part)
      if (suffix == expert_path(e, part) + ".weight") return &lw.experts[size_t(e)][size_t(part)];
    return nullptr;
  }
  if (suffix == "self_attn.q_norm.weight") return &lw.q_norm;
  if (suffix == "self_attn.k_norm.weight") return &lw.k_norm;
  for (int p = 0; p < kProjCount; ++p) {
    if (suffix == projection_path(p) + ".weight") return &lw.projection(p);
    if (suffix == projection_path(p) + ".bias") return lw.bias(p);
  }
  return nullptr;
}

}  // namespace qlora
