// Shared loader steps: validation of every tensor against the config, RoPE row order, dtype
// conversion, file_dtype summary.
#include "model/load_common.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <map>

#include "core/error.h"

namespace qlora {
namespace {

bool is_float(DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16 || d == DType::F64; }

class Assembler {
 public:
  Assembler(const TensorLookup& lookup, const LoadOptions& options,
            const std::string& where)
      : lookup_(lookup), options_(options), where_(where) {}

  // A tensor the config requires; `matrix` ones go to the weight dtype, the rest to f32.
  Tensor get(const std::string& name, const Shape& expected, bool matrix) {
    auto src = lookup_(name);
    if (!src) fail("load", "tensor {} is missing from {}", name, where_);
    return finish(name, *src, expected, matrix);
  }
  std::optional<SourceTensor> find(const std::string& name) { return lookup_(name); }

  Tensor finish(const std::string& name, const SourceTensor& src, const Shape& expected, bool matrix) {
    const std::string label =
        src.name_in_file == name ? name : src.name_in_file + " (" + name + ")";
    if (src.shape != expected)
      fail("load", "tensor {} in {} has shape {}; expected {}", label, src.file, shape_str(src.shape),
           shape_str(expected));
    Tensor t = src.load();
    QLORA_ASSERT(t.shape() == expected, "loaded {} as {}", label, t.describe());
    if (!is_float(t.dtype()))
      fail("load", "tensor {} in {} has dtype {}; expected a floating-point dtype (f32, bf16, f16)", label,
           src.file, dtype_name(t.dtype()));
    numel_by_type_[src.stored_type] += t.numel();
    if (src.rope_heads > 0) t = unpermute_rope_rows(t, src.rope_heads);
    if (matrix) return t.dtype() == options_.weight_dtype ? t : t.to(options_.weight_dtype);
    // Norms and biases: always an owned f32 copy.
    return t.dtype() == DType::F32 ? t.clone() : t.to(DType::F32);
  }

  // Stored types, most elements first: "Q4_1+Q8_0+F32".
  std::string stored_types() const {
    std::vector<std::pair<std::string, int64_t>> v(numel_by_type_.begin(), numel_by_type_.end());
    std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    std::string s;
    for (const auto& [type, n] : v) s += (s.empty() ? "" : "+") + type;
    return s;
  }

 private:
  const TensorLookup& lookup_;
  const LoadOptions& options_;
  const std::string& where_;
  std::map<std::string, int64_t> numel_by_type_;
};

}  // namespace

Tensor reorder_rope_rows(const Tensor& w, int64_t n_heads, bool to_adjacent_pairs) {
  QLORA_ASSERT(w.ndim() >= 1 && n_heads > 0 && w.dim(0) % n_heads == 0 && (w.dim(0) / n_heads) % 2 == 0,
               "reorder_rope_rows: {} rows do not split into {} heads of even size", w.dim(0), n_heads);
  const int64_t D = w.dim(0) / n_heads;
  const size_t row_bytes = w.nbytes() / size_t(w.dim(0));
  Tensor out = Tensor::zeros(w.shape(), w.dtype());
  const auto* src = static_cast<const uint8_t*>(w.raw());
  auto* dst = static_cast<uint8_t*>(out.raw());
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t i = 0; i < D / 2; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const size_t pair_row = size_t(h * D + 2 * i + j), half_row = size_t(h * D + j * (D / 2) + i);
        const size_t to = to_adjacent_pairs ? pair_row : half_row, from = to_adjacent_pairs ? half_row : pair_row;
        std::memcpy(dst + to * row_bytes, src + from * row_bytes, row_bytes);
      }
  return out;
}

Tensor unpermute_rope_rows(const Tensor& w, int64_t n_heads) { return reorder_rope_rows(w, n_heads, false); }

void assemble_weights(LlamaModelFile& model, const TensorLookup& lookup, const LoadOptions& options,
                      const std::string& where) {
  if (options.weight_dtype != DType::F32 && options.weight_dtype != DType::BF16)
    fail("load", "weight dtype must be f32 or bf16; got {}", dtype_name(options.weight_dtype));
  const LlamaConfig& c = model.config;
  const int64_t C = c.hidden_size, V = c.vocab_size;
  Assembler a(lookup, options, where);
  LlamaWeights& w = model.weights;

  w.embed_tokens = a.get("model.embed_tokens.weight", {V, C}, true);
  w.layers.resize(size_t(c.num_hidden_layers));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LlamaLayerWeights& L = w.layers[size_t(l)];
    L.input_layernorm = a.get(p + "input_layernorm.weight", {C}, false);
    for (int proj = 0; proj < kProjCount; ++proj) {
      const auto [out, in] = c.projection_shape(proj);
      L.projection(proj) = a.get(p + projection_path(proj) + ".weight", {out, in}, true);
      Tensor* bias = L.bias(proj);
      if (bias && c.attention_bias) *bias = a.get(p + projection_path(proj) + ".bias", {out}, false);
    }
    L.post_attention_layernorm = a.get(p + "post_attention_layernorm.weight", {C}, false);
  }
  w.norm = a.get("model.norm.weight", {C}, false);
  // Tied: the head is the embedding (HF ignores a stored lm_head.weight then, and so do we).
  w.lm_head = c.tie_word_embeddings ? w.embed_tokens : a.get("lm_head.weight", {V, C}, true);
  model.file_dtype = a.stored_types();
}

std::string_view gguf_projection_name(int index) {
  static constexpr std::array<std::string_view, kProjCount> kNames = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                                                      "ffn_gate", "ffn_up", "ffn_down"};
  QLORA_ASSERT(index >= 0 && index < kProjCount, "projection index {}", index);
  return kNames[size_t(index)];
}

}  // namespace qlora
