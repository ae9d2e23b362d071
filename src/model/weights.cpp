// LlamaLayerWeights' projections by index (core/projections.h order). Tested through the loaders
// and exporters (tests/unit/test_loader.cpp, test_merge_export.cpp).
#include "model/weights.h"

#include <charconv>
#include <string_view>
#include <tuple>

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

namespace {
struct MoeNames {
  const char* router;
  const char* experts;            // the experts' prefix, up to the index
  std::array<const char*, 3> parts;  // gate, up, down
};
constexpr MoeNames kMixtral = {"block_sparse_moe.gate", "block_sparse_moe.experts.", {"w1", "w3", "w2"}};
constexpr MoeNames kQwen3Moe = {"mlp.gate", "mlp.experts.", {"gate_proj", "up_proj", "down_proj"}};
const MoeNames& moe_names(const std::string& model_type) { return model_type == "qwen3_moe" ? kQwen3Moe : kMixtral; }
}  // namespace

std::string router_path(const std::string& model_type) { return moe_names(model_type).router; }

std::string expert_path(const std::string& model_type, int64_t expert, int part) {
  const MoeNames& n = moe_names(model_type);
  return n.experts + std::to_string(expert) + "." + n.parts[size_t(part)];
}

std::string expert_part_name(const std::string& model_type, int part) {
  return moe_names(model_type).parts[size_t(part)];
}

bool parse_expert_path(const std::string& suffix, int64_t& expert, int& part) {
  for (const MoeNames* n : {&kMixtral, &kQwen3Moe}) {
    const std::string_view prefix = n->experts;
    if (suffix.rfind(prefix, 0) != 0) continue;
    const char* begin = suffix.data() + prefix.size();
    const auto [end, ec] = std::from_chars(begin, suffix.data() + suffix.size(), expert);
    if (ec != std::errc() || end == begin || expert < 0 || *end != '.') return false;
    const std::string rest(end + 1);
    for (int p = 0; p < 3; ++p)
      if (rest == std::string(n->parts[size_t(p)]) + ".weight") return part = p, true;
    return false;
  }
  return false;
}

std::optional<LayerModule> find_layer_module(const LlamaConfig& c, int64_t layer, std::string_view path) {
  if (layer < 0 || layer >= c.num_hidden_layers) return std::nullopt;
  LayerModule m;
  const bool sparse = c.moe_layer(layer);
  if (sparse && path == router_path(c.model_type)) {
    m.kind = LayerModule::Kind::Router;
    m.out = c.num_local_experts, m.in = c.hidden_size;
    return m;
  }
  if (sparse && parse_expert_path(std::string(path) + ".weight", m.expert, m.part) && m.expert < c.num_local_experts &&
      path == expert_path(c.model_type, m.expert, m.part)) {
    m.kind = LayerModule::Kind::Expert;
    std::tie(m.out, m.in) = c.expert_shape(m.part);
    return m;
  }
  for (int p = 0; p < kProjCount; ++p)
    if (path == projection_path(p)) {
      if (sparse && p >= kProjGate) return std::nullopt;  // the experts replace the dense MLP
      m.projection = p;
      std::tie(m.out, m.in) = c.projection_shape(p);
      return m;
    }
  return std::nullopt;
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
  if (suffix == kMixtral.router + std::string(".weight") || suffix == kQwen3Moe.router + std::string(".weight"))
    return &lw.router;
  int64_t e = -1;
  int part = -1;
  if (parse_expert_path(suffix, e, part))
    return e < int64_t(lw.experts.size()) ? &lw.experts[size_t(e)][size_t(part)] : nullptr;
  if (suffix == "self_attn.q_norm.weight") return &lw.q_norm;
  if (suffix == "self_attn.k_norm.weight") return &lw.k_norm;
  for (int p = 0; p < kProjCount; ++p) {
    if (suffix == projection_path(p) + ".weight") return &lw.projection(p);
    if (suffix == projection_path(p) + ".bias") return lw.bias(p);
  }
  return nullptr;
}

}  // namespace qlora
