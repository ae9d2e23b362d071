// ModelSource: config-driven tensor names and shapes, validated loads, releases, and the
// in-memory source. The formats' lookups are in load_hf.cpp, load_gguf.cpp and load_llama2c.cpp.
#include "model/model_source.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "core/error.h"
#include "core/projections.h"
#include "model/load_common.h"

namespace qlora {
namespace fs = std::filesystem;

struct ModelSource::Impl {
  LlamaConfig config;
  std::string path, format, where;
  TensorLookup lookup;

  SourceTensor find(const std::string& name) const {
    auto src = lookup(name);
    if (!src) fail("load", "tensor {} is missing from {}", name, where);
    return *src;
  }
};

namespace {

bool is_float(DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16 || d == DType::F64; }

std::string label_of(const std::string& name, const SourceTensor& src) {
  return src.name_in_file == name ? name : src.name_in_file + " (" + name + ")";
}

}  // namespace

ModelSource::ModelSource(LlamaConfig config, std::string path, std::string format, std::string where,
                         TensorLookup lookup)
    : impl_(std::make_shared<Impl>()) {
  impl_->config = std::move(config);
  impl_->path = std::move(path);
  impl_->format = std::move(format);
  impl_->where = std::move(where);
  impl_->lookup = std::move(lookup);
}

ModelSource ModelSource::open(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail("load", "{} does not exist; expected a model folder, *.gguf or *.bin", path);
  if (fs::is_directory(path, ec)) return open_hf_folder(path);
  char magic[4] = {};
  std::ifstream(path, std::ios::binary).read(magic, 4);
  const std::string ext = fs::path(path).extension().string();
  if (std::memcmp(magic, "GGUF", 4) == 0 || ext == ".gguf") return open_gguf_model(path);
  if (ext == ".bin") return open_llama2c_model(path);
  if (ext == ".safetensors")
    fail("load", "{}: pass the folder holding it (with config.json), not the .safetensors file", path);
  fail("load", "{}: unrecognised model format; expected a Hugging Face folder, a *.gguf file or a "
               "llama2.c *.bin checkpoint",
       path);
}

ModelSource ModelSource::from_file(LlamaModelFile file) {
  auto held = std::make_shared<LlamaModelFile>(std::move(file));
  const bool tied = held->weights.lm_head.defined() && held->weights.lm_head.raw() == held->weights.embed_tokens.raw();
  TensorLookup lookup = [held, tied](const std::string& name) -> std::optional<SourceTensor> {
    Tensor* slot = held->weights.find(name);
    if (!slot || !slot->defined()) return std::nullopt;
    SourceTensor src;
    src.shape = slot->shape();
    src.file = held->path.empty() ? "memory" : held->path;
    src.name_in_file = name;
    src.stored_type = std::string(dtype_name(slot->dtype()));
    src.load = [slot] { return *slot; };
    src.release = [held, slot, tied, name] {
      *slot = Tensor();
      if (tied && name == "model.embed_tokens.weight") held->weights.lm_head = Tensor();
    };
    return src;
  };
  LlamaConfig config = held->config;
  const std::string path = held->path;
  const std::string format = held->format.empty() ? "memory" : held->format;
  return ModelSource(std::move(config), path, format, path.empty() ? "the model in memory" : path, lookup);
}

const LlamaConfig& ModelSource::config() const { return impl_->config; }
const std::string& ModelSource::path() const { return impl_->path; }
const std::string& ModelSource::format() const { return impl_->format; }

std::vector<std::string> ModelSource::tensor_names() const {
  const LlamaConfig& c = impl_->config;
  std::vector<std::string> names = {"model.embed_tokens.weight"};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    names.push_back(p + "input_layernorm.weight");
    const bool sparse = c.moe_layer(l);
    for (int proj = 0; proj < kProjCount; ++proj) {
      if (sparse && proj >= kProjGate) break;  // the experts replace the dense MLP
      names.push_back(p + projection_path(proj) + ".weight");
      if (c.attention_bias && proj <= kProjV) names.push_back(p + projection_path(proj) + ".bias");
    }
    if (sparse) {
      names.push_back(p + router_path(c.model_type) + ".weight");
      for (int64_t e = 0; e < c.num_local_experts; ++e)
        for (int part = 0; part < 3; ++part) names.push_back(p + expert_path(c.model_type, e, part) + ".weight");
    }
    if (c.qk_norm) names.insert(names.end(), {p + "self_attn.q_norm.weight", p + "self_attn.k_norm.weight"});
    names.push_back(p + "post_attention_layernorm.weight");
  }
  names.push_back("model.norm.weight");
  if (!c.tie_word_embeddings) names.push_back("lm_head.weight");
  return names;
}

Shape ModelSource::expected_shape(const std::string& name) const {
  const LlamaConfig& c = impl_->config;
  const int64_t C = c.hidden_size, V = c.vocab_size;
  if (name == "model.embed_tokens.weight" || name == "lm_head.weight") return {V, C};
  if (name == "model.norm.weight") return {C};
  constexpr std::string_view kLayers = "model.layers.";
  if (name.rfind(kLayers, 0) == 0) {
    const size_t dot = name.find('.', kLayers.size());
    const std::string suffix = dot == std::string::npos ? "" : name.substr(dot + 1);
    if (suffix == "input_layernorm.weight" || suffix == "post_attention_layernorm.weight") return {C};
    if (c.qk_norm && (suffix == "self_attn.q_norm.weight" || suffix == "self_attn.k_norm.weight")) return {c.head_dim};
    int64_t layer = -1;
    std::from_chars(name.data() + kLayers.size(), name.data() + name.size(), layer);
    // The linears the layer has (projections, or a sparse layer's router and experts).
    constexpr std::string_view kWeight = ".weight";
    if (suffix.ends_with(kWeight))
      if (const auto m = find_layer_module(c, layer, std::string_view(suffix).substr(0, suffix.size() - kWeight.size())))
        return {m->out, m->in};
    for (int p = 0; p < kProjCount; ++p)
      if (suffix == projection_path(p) + ".bias" && !(c.moe_layer(layer) && p >= kProjGate))
        return {c.projection_shape(p).first};
  }
  fail("load", "tensor {} is not part of a {} model", name, c.architecture);
}

Tensor ModelSource::load(const std::string& name) const {
  const SourceTensor src = impl_->find(name);
  const std::string label = label_of(name, src);
  const Shape expected = expected_shape(name);
  if (src.shape != expected)
    fail("load", "tensor {} in {} has shape {}; expected {}", label, src.file, shape_str(src.shape),
         shape_str(expected));
  Tensor t = src.load();
  QLORA_ASSERT(t.shape() == expected, "loaded {} as {}", label, t.describe());
  if (!is_float(t.dtype()))
    fail("load", "tensor {} in {} has dtype {}; expected a floating-point dtype (f32, bf16, f16)", label, src.file,
         dtype_name(t.dtype()));
  if (src.rope_heads > 0) t = unpermute_rope_rows(t, src.rope_heads);
  return t;
}

std::optional<QuantTensor> ModelSource::load_quantized(const std::string& name) const {
  auto src = impl_->lookup(name);
  if (!src || !src->load_quantized) return std::nullopt;
  const Shape expected = expected_shape(name);
  if (src->shape != expected)
    fail("load", "tensor {} in {} has shape {}; expected {}", label_of(name, *src), src->file, shape_str(src->shape),
         shape_str(expected));
  return src->load_quantized();
}

void ModelSource::release(const std::string& name) const {
  auto src = impl_->lookup(name);
  if (src && src->release) src->release();
}

std::string ModelSource::stored_type(const std::string& name) const { return impl_->find(name).stored_type; }

std::string ModelSource::stored_types() const {
  std::map<std::string, int64_t> numel_by_type;
  for (const std::string& name : tensor_names())
    if (auto src = impl_->lookup(name)) numel_by_type[src->stored_type] += shape_numel(src->shape);
  std::vector<std::pair<std::string, int64_t>> v(numel_by_type.begin(), numel_by_type.end());
  std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  std::string s;
  for (const auto& [type, n] : v) s += (s.empty() ? "" : "+") + type;
  return s;
}

void check_tokenizer_fits(int64_t tokenizer_vocab, const std::string& tokenizer_name, const LlamaConfig& config,
                          const std::string& model_name) {
  if (tokenizer_vocab > config.vocab_size)
    fail("model",
         "the tokenizer {} has {} tokens but the model {} has vocab_size {}: its ids {}..{} have no embedding row; "
         "use the model's own tokenizer (a smaller tokenizer is fine, a larger one is not)",
         tokenizer_name, tokenizer_vocab, model_name, config.vocab_size, config.vocab_size, tokenizer_vocab - 1);
}

}  // namespace qlora
