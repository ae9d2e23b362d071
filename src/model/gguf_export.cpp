// GGUF model export (declared in model/hf_export.h): the metadata llama.cpp's llama/qwen2/qwen3/
// qwen3moe loaders read (llama-arch.cpp LLM_KV_* names), llama.cpp tensor names, q/k rows back in
// the interleaved RoPE order convert_hf_to_gguf.py writes for "llama". Mixture of experts as
// convert_hf_to_gguf.py writes it: Mixtral as "llama" with expert_count, Qwen3-MoE as "qwen3moe";
// a layer's router is ffn_gate_inp and its experts are stacked into ffn_{gate,up,down}_exps
// (E, out, in), each expert encoded as its own rows. Tested in tests/unit/test_merge_export.cpp
// and, with llama.cpp, tests/e2e/test_peft_roundtrip.cpp.
#include <fmt/core.h>

#include <filesystem>
#include <map>

#include "core/error.h"
#include "io/gguf_writer.h"
#include "model/hf_export.h"
#include "model/load_common.h"
#include "model/tokenizer_export.h"
#include "model/weights.h"

namespace qlora {

std::vector<std::string> export_gguf(const LlamaModelFile& model, const std::string& path,
                                     const GgufExportOptions& options) {
  return export_gguf(ModelSource::from_file(model), path, options);
}

std::vector<std::string> export_gguf(const ModelSource& model, const std::string& path,
                                     const GgufExportOptions& options) {
  std::vector<std::string> notes;
  const LlamaConfig& c = model.config();
  const GgmlType type = options.type;
  if (type != GgmlType::F32 && type != GgmlType::F16 && type != GgmlType::BF16 && type != GgmlType::Q8_0)
    fail("export", "GGUF export type must be f32, f16, bf16 or q8_0; got {}", ggml_type_name(uint32_t(type)));
  if (c.moe()) {
    // llama.cpp runs every layer sparse and renormalises the top k (norm_w): refuse what it would
    // run differently rather than write a file that gives other logits.
    if (c.moe_layer_count() != c.num_hidden_layers)
      fail("export", "GGUF export: {} has dense MLP layers among its sparse ones (decoder_sparse_step {}, "
                     "mlp_only_layers); llama.cpp's {} runs every layer sparse. Export an HF folder instead",
           c.architecture, c.decoder_sparse_step, c.model_type == "qwen3_moe" ? "qwen3moe" : "llama");
    if (!c.norm_topk_prob)
      fail("export", "GGUF export: {} has norm_topk_prob false; llama.cpp renormalises the top-k routing weights. "
                     "Export an HF folder instead",
           c.architecture);
  }
  if (!c.rope_scaling.type.empty() && c.rope_scaling.type != "linear")
    fail("export", "rope_scaling type '{}' cannot be written to GGUF by this exporter (supported: none, linear)",
         c.rope_scaling.type);
  // mistral is "llama" to llama.cpp; qwen2 and qwen3 keep HF's (NEOX) q/k row order.
  const bool qwen = c.model_type == "qwen2" || c.model_type == "qwen3" || c.model_type == "qwen3_moe";
  const std::string arch = c.model_type == "qwen3_moe" ? "qwen3moe" : qwen ? c.model_type : "llama";
  auto key = [&](const std::string& k) { return arch + "." + k; };

  GgufWriter g;
  g.add_string("general.architecture", arch);
  g.add_string("general.name", std::filesystem::path(model.path()).filename().string());
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
  if (c.moe()) {
    g.add_u32(key("expert_count"), uint32_t(c.num_local_experts));
    g.add_u32(key("expert_used_count"), uint32_t(c.num_experts_per_tok));
    if (arch == "qwen3moe") g.add_u32(key("expert_feed_forward_length"), uint32_t(c.moe_intermediate_size));
  }
  if (c.rope_scaling.type == "linear") {
    g.add_string(key("rope.scaling.type"), "linear");
    g.add_f32(key("rope.scaling.factor"), float(c.rope_scaling.factor));
  }

  bool have_tokenizer = false;
  if (model.format() == "gguf") {
    copy_gguf_tokenizer(GgufFile::open(model.path()), g);
    have_tokenizer = true;
  } else if (model.format() == "hf") {
    have_tokenizer = gguf_tokenizer_from_hf(model.path(), g);
  }
  if (!have_tokenizer) {
    notes.push_back(fmt::format("no tokenizer metadata written (source {} has no byte-level BPE tokenizer.json); "
                                "llama.cpp needs one to run the file",
                                model.path()));
  }
  // The config's ids win over the tokenizer's when they are set and the tokenizer lacks them.
  if (c.bos_token_id >= 0 && !g.has("tokenizer.ggml.bos_token_id"))
    g.add_u32("tokenizer.ggml.bos_token_id", uint32_t(c.bos_token_id));
  if (!c.eos_token_ids.empty() && !g.has("tokenizer.ggml.eos_token_id"))
    g.add_u32("tokenizer.ggml.eos_token_id", uint32_t(c.eos_token_ids[0]));

  // Matrices in `type` (F16 where Q8_0 does not fit the row length), 1-D tensors F32, like llama.cpp.
  // Each tensor is declared now (llama.cpp name, shape, type) and produced while the file is
  // written: loaded from the source (merged when it merges an adapter), q/k rows back to the
  // interleaved RoPE order (llama only), encoded, and its source released.
  struct Planned {
    std::vector<std::string> hf_names;  // one tensor, or a layer's experts stacked in this order
    int64_t rope_heads;  // > 0: permute rows to llama.cpp's RoPE order over this many heads
    GgmlType type;
  };
  std::map<std::string, Planned> plan;
  // `stacked`: hf_names are a layer's experts, one (E, out, in) tensor (even when E is 1).
  auto add_stack = [&](const std::string& gguf_name, const std::vector<std::string>& hf_names, bool stacked,
                       int64_t rope_heads) {
    Shape shape = model.expected_shape(hf_names[0]);
    if (stacked) shape.insert(shape.begin(), int64_t(hf_names.size()));
    // convert_hf_to_gguf.py keeps the router (ffn_gate_inp) in F32 whatever the file type.
    GgmlType t = GgmlType::F32;
    if (shape.size() >= 2 && !gguf_name.ends_with(".ffn_gate_inp.weight")) {
      t = type == GgmlType::Q8_0 && shape.back() % 32 != 0 ? GgmlType::F16 : type;
      if (t != type)
        notes.push_back(fmt::format("{} {} written as F16: rows of {} are not a multiple of 32", gguf_name,
                                    shape_str(shape), shape.back()));
    }
    g.declare_tensor(gguf_name, shape, t);
    plan[gguf_name] = {hf_names, qwen ? 0 : rope_heads, t};
  };
  auto add = [&](const std::string& gguf_name, const std::string& hf_name, int64_t rope_heads) {
    add_stack(gguf_name, {hf_name}, false, rope_heads);
  };
  add("token_embd.weight", "model.embed_tokens.weight", 0);
  const int64_t L = c.num_hidden_layers;
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = fmt::format("blk.{}.", l), hf = fmt::format("model.layers.{}.", l);
    // q and k rows go back to the interleaved RoPE order; v and the rest are as they are.
    auto rope_heads = [&](int proj) -> int64_t {
      return proj == kProjQ ? c.num_attention_heads : proj == kProjK ? c.num_key_value_heads : 0;
    };
    auto name = [&](int proj, const char* suffix) { return p + std::string(gguf_projection_name(proj)) + suffix; };
    auto hf_name = [&](int proj, const char* suffix) { return hf + std::string(projection_path(proj)) + suffix; };
    // llama.cpp's order: attn_norm, q, k, v, their biases, attn_output, ffn_norm, gate, up, down.
    add(p + "attn_norm.weight", hf + "input_layernorm.weight", 0);
    for (int proj = kProjQ; proj <= kProjV; ++proj) add(name(proj, ".weight"), hf_name(proj, ".weight"), rope_heads(proj));
    if (c.attention_bias)
      for (int proj = kProjQ; proj <= kProjV; ++proj) add(name(proj, ".bias"), hf_name(proj, ".bias"), rope_heads(proj));
    add(name(kProjO, ".weight"), hf_name(kProjO, ".weight"), 0);
    if (c.qk_norm) {
      add(p + "attn_q_norm.weight", hf + "self_attn.q_norm.weight", 0);
      add(p + "attn_k_norm.weight", hf + "self_attn.k_norm.weight", 0);
    }
    add(p + "ffn_norm.weight", hf + "post_attention_layernorm.weight", 0);
    if (c.moe()) {
      add(p + "ffn_gate_inp.weight", hf + router_path(c.model_type) + ".weight", 0);
      for (int part = 0; part < 3; ++part) {
        std::vector<std::string> experts;
        for (int64_t e = 0; e < c.num_local_experts; ++e)
          experts.push_back(hf + expert_path(c.model_type, e, part) + ".weight");
        add_stack(p + std::string(gguf_expert_stack_name(part)) + ".weight", experts, true, 0);
      }
    } else {
      for (int proj = kProjGate; proj <= kProjDown; ++proj) add(name(proj, ".weight"), hf_name(proj, ".weight"), 0);
    }
  }
  add("output_norm.weight", "model.norm.weight", 0);
  if (!c.tie_word_embeddings) add("output.weight", "lm_head.weight", 0);

  int64_t layers_done = 0;
  // A block's last tensor, whose write advances the progress by one layer.
  const std::string last =
      "." + std::string(c.moe() ? gguf_expert_stack_name(2) : gguf_projection_name(kProjDown)) + ".weight";
  g.write(path, [&](const std::string& gguf_name) {
    const Planned& p = plan.at(gguf_name);
    // GGML rows are independent, so a stack's bytes are its experts' bytes one after another.
    std::vector<uint8_t> bytes;
    for (const std::string& hf_name : p.hf_names) {
      Tensor t = model.load(hf_name);
      if (p.rope_heads) t = permute_rope_rows(t, p.rope_heads);
      const std::vector<uint8_t> part = encode_ggml_tensor(gguf_name, t, p.type);
      bytes.insert(bytes.end(), part.begin(), part.end());
      model.release(hf_name);
    }
    if (options.progress && gguf_name.ends_with(last))
      options.progress(++layers_done, L, gguf_name.substr(0, gguf_name.size() - last.size()));
    return bytes;
  });
  return notes;
}

}  // namespace qlora
