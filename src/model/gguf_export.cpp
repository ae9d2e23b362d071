// GGUF model export (declared in model/hf_export.h): the metadata llama.cpp's llama/qwen2 loaders
// read (llama-arch.cpp LLM_KV_* names), llama.cpp tensor names, q/k rows back in the interleaved
// RoPE order convert_hf_to_gguf.py writes for "llama". Tested in tests/unit/test_merge_export.cpp.
#include <fmt/core.h>

#include <filesystem>

#include "core/error.h"
#include "io/gguf_writer.h"
#include "model/hf_export.h"
#include "model/load_common.h"
#include "model/tokenizer_export.h"

namespace qlora {

std::vector<std::string> export_gguf(const LlamaModelFile& model, const std::string& path,
                                     const GgufExportOptions& options) {
  std::vector<std::string> notes;
  const LlamaConfig& c = model.config;
  const LlamaWeights& w = model.weights;
  const GgmlType type = options.type;
  if (type != GgmlType::F32 && type != GgmlType::F16 && type != GgmlType::BF16 && type != GgmlType::Q8_0)
    fail("export", "GGUF export type must be f32, f16, bf16 or q8_0; got {}", ggml_type_name(uint32_t(type)));
  if (!c.rope_scaling.type.empty() && c.rope_scaling.type != "linear")
    fail("export", "rope_scaling type '{}' cannot be written to GGUF by this exporter (supported: none, linear)",
         c.rope_scaling.type);
  const bool qwen2 = c.model_type == "qwen2";
  const std::string arch = qwen2 ? "qwen2" : "llama";  // mistral is "llama" to llama.cpp
  auto key = [&](const std::string& k) { return arch + "." + k; };

  GgufWriter g;
  g.add_string("general.architecture", arch);
  g.add_string("general.name", std::filesystem::path(model.path).filename().string());
  g.add_u32("general.alignment", 32);
  // llama_ftype: 0 ALL_F32, 1 MOSTLY_F16, 7 MOSTLY_Q8_0, 32 MOSTLY_BF16.
  g.add_u32("general.file_type", type == GgmlType::F32 ? 0 : type == GgmlType::F16 ? 1 : type == GgmlType::Q8_0 ? 7 : 32);
  g.add_u32(key("context_length"), uint32_t(c.max_position_embeddings));
  g.add_u32(key("embedding_length"), uint32_t(c.hidden_size));
  g.add_u32(key("block_count"), uint32_t(c.num_hidden_layers));
  g.add_u32(key("feed_forward_length"), uint32_t(c.intermediate_size));
  g.add_u32(key("attention.head_count"), uint32_t(c.num_attention_heads));
  g.add_u32(key("attention.head_count_kv"), uint32_t(c.num_key_value_heads));
  g.add_f32(key("rope.freq_base"), float(c.rope_theta));
  g.add_f32(key("attention.layer_norm_rms_epsilon"), float(c.rms_norm_eps));
  g.add_u32(key("rope.dimension_count"), uint32_t(c.head_dim));
  if (c.head_dim * c.num_attention_heads != c.hidden_size) {
    g.add_u32(key("attention.key_length"), uint32_t(c.head_dim));
    g.add_u32(key("attention.value_length"), uint32_t(c.head_dim));
  }
  g.add_u32(key("vocab_size"), uint32_t(c.vocab_size));
  if (c.rope_scaling.type == "linear") {
    g.add_string(key("rope.scaling.type"), "linear");
    g.add_f32(key("rope.scaling.factor"), float(c.rope_scaling.factor));
  }

  bool have_tokenizer = false;
  if (model.format == "gguf") {
    copy_gguf_tokenizer(GgufFile::open(model.path), g);
    have_tokenizer = true;
  } else if (model.format == "hf") {
    have_tokenizer = gguf_tokenizer_from_hf(model.path, g);
  }
  if (!have_tokenizer) {
    notes.push_back(fmt::format("no tokenizer metadata written (source {} has no byte-level BPE tokenizer.json); "
                                "llama.cpp needs one to run the file",
                                model.path));
  }
  // The config's ids win over the tokenizer's when they are set and the tokenizer lacks them.
  if (c.bos_token_id >= 0 && !g.has("tokenizer.ggml.bos_token_id"))
    g.add_u32("tokenizer.ggml.bos_token_id", uint32_t(c.bos_token_id));
  if (!c.eos_token_ids.empty() && !g.has("tokenizer.ggml.eos_token_id"))
    g.add_u32("tokenizer.ggml.eos_token_id", uint32_t(c.eos_token_ids[0]));

  // Matrices in `type` (F16 where Q8_0 does not fit the row length), 1-D tensors F32, like llama.cpp.
  auto matrix_type = [&](const Tensor& t) {
    return type == GgmlType::Q8_0 && t.dim(-1) % 32 != 0 ? GgmlType::F16 : type;
  };
  auto add_matrix = [&](const std::string& name, const Tensor& t) {
    if (matrix_type(t) != type)
      notes.push_back(fmt::format("{} {} written as F16: rows of {} are not a multiple of 32", name,
                                  shape_str(t.shape()), t.dim(-1)));
    g.add_tensor(name, t, matrix_type(t));
  };
  add_matrix("token_embd.weight", w.embed_tokens);
  const int64_t L = int64_t(w.layers.size());
  for (int64_t l = 0; l < L; ++l) {
    const LlamaLayerWeights& lw = w.layers[size_t(l)];
    const std::string p = fmt::format("blk.{}.", l);
    auto rope = [&](const Tensor& t, int64_t heads) { return qwen2 ? t : permute_rope_rows(t, heads); };
    // q and k rows go back to the interleaved RoPE order; v and the rest are as they are.
    auto rope_heads = [&](int proj) -> int64_t {
      return proj == kProjQ ? c.num_attention_heads : proj == kProjK ? c.num_key_value_heads : 0;
    };
    auto stored = [&](const Tensor& t, int proj) { return rope_heads(proj) ? rope(t, rope_heads(proj)) : t; };
    auto name = [&](int proj, const char* suffix) { return p + std::string(gguf_projection_name(proj)) + suffix; };
    // llama.cpp's order: attn_norm, q, k, v, their biases, attn_output, ffn_norm, gate, up, down.
    g.add_tensor(p + "attn_norm.weight", lw.input_layernorm, GgmlType::F32);
    for (int proj = kProjQ; proj <= kProjV; ++proj) add_matrix(name(proj, ".weight"), stored(lw.projection(proj), proj));
    for (int proj = kProjQ; proj <= kProjV; ++proj)
      if (lw.bias(proj)->defined()) g.add_tensor(name(proj, ".bias"), stored(*lw.bias(proj), proj), GgmlType::F32);
    add_matrix(name(kProjO, ".weight"), lw.o_proj);
    g.add_tensor(p + "ffn_norm.weight", lw.post_attention_layernorm, GgmlType::F32);
    for (int proj = kProjGate; proj <= kProjDown; ++proj) add_matrix(name(proj, ".weight"), lw.projection(proj));
    if (options.progress) options.progress(l + 1, L, p);
  }
  g.add_tensor("output_norm.weight", w.norm, GgmlType::F32);
  if (!c.tie_word_embeddings) add_matrix("output.weight", w.lm_head);
  g.write(path);
  return notes;
}

}  // namespace qlora
