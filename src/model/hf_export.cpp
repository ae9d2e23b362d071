// HF folder export. See hf_export.h.
#include "model/hf_export.h"
#include "model/load_common.h"
#include "io/atomic_file.h"

#include <fmt/core.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "model/tokenizer_export.h"
#include "quant/bnb_format.h"
#include "quant/nf4.h"

namespace qlora {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string torch_dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "float32";
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    default: fail("export", "HF export dtype must be f32, bf16 or f16; got {}", dtype_name(d));
  }
}

void write_text_atomic(const fs::path& path, const std::string& text) {
  write_file_atomically(path.string(), text, "export");
}

json read_json(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("export", "cannot open {}", path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::exception& e) {
    fail("export", "{}: malformed JSON: {}", path.string(), e.what());
  }
}

// The tokenizer and generation files: copied from an HF source folder, built from a GGUF source.
void write_side_files(const ModelSource& model, const fs::path& out, std::vector<std::string>& notes) {
  const LlamaConfig& c = model.config();
  if (model.format() == "hf") {
    const fs::path src(model.path());
    bool any = false;
    for (const char* name : {"tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                             "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja",
                             "generation_config.json"}) {
      const fs::path from = src / name;
      if (!fs::exists(from) || fs::equivalent(src, out)) continue;
      copy_file_atomically(from.string(), (out / name).string(), "export");
      any = any || std::string(name) != "generation_config.json";
    }
    if (!any) notes.push_back(fmt::format("no tokenizer files beside {}; none written", model.path()));
  } else if (model.format() == "gguf") {
    const GgufFile g = GgufFile::open(model.path());
    try {
      const HfTokenizerFiles files = hf_tokenizer_from_gguf(g);
      write_text_atomic(out / "tokenizer.json", files.tokenizer.dump(2) + "\n");
      write_text_atomic(out / "tokenizer_config.json", files.tokenizer_config.dump(2) + "\n");
    } catch (const Error& e) {
      notes.push_back(fmt::format("no tokenizer written: {}", e.what()));
    }
  } else {
    notes.push_back(fmt::format("no tokenizer written for a {} source", model.format()));
  }
  if (!fs::exists(out / "generation_config.json") && (c.bos_token_id >= 0 || !c.eos_token_ids.empty())) {
    json g;
    if (c.bos_token_id >= 0) g["bos_token_id"] = c.bos_token_id;
    if (c.eos_token_ids.size() == 1) g["eos_token_id"] = c.eos_token_ids[0];
    else if (!c.eos_token_ids.empty()) g["eos_token_id"] = c.eos_token_ids;
    if (c.pad_token_id >= 0) g["pad_token_id"] = c.pad_token_id;
    write_text_atomic(out / "generation_config.json", g.dump(2) + "\n");
  }
}

json quantization_config_json(const HfExportOptions& o) {
  // As transformers 5.23 writes a BitsAndBytesConfig (same as `qlora quantize`).
  return {{"_load_in_4bit", true},
          {"_load_in_8bit", false},
          {"bnb_4bit_compute_dtype", torch_dtype_name(o.dtype)},
          {"bnb_4bit_quant_storage", "uint8"},
          {"bnb_4bit_quant_type", "nf4"},
          {"bnb_4bit_use_double_quant", o.nf4_double_quant},
          {"llm_int8_enable_fp32_cpu_offload", false},
          {"llm_int8_has_fp16_weight", false},
          {"llm_int8_skip_modules", nullptr},
          {"llm_int8_threshold", 6.0},
          {"load_in_4bit", true},
          {"load_in_8bit", false},
          {"quant_method", "bitsandbytes"}};
}

}  // namespace

Tensor permute_rope_rows(const Tensor& w, int64_t n_heads) { return reorder_rope_rows(w, n_heads, true); }

std::vector<std::string> export_hf_folder(const LlamaModelFile& model, const std::string& out_dir,
                                          const HfExportOptions& options) {
  return export_hf_folder(ModelSource::from_file(model), out_dir, options);
}

std::vector<std::string> export_hf_folder(const ModelSource& model, const std::string& out_dir,
                                          const HfExportOptions& options) {
  std::vector<std::string> notes;
  const std::string dtype_str = torch_dtype_name(options.dtype);
  const fs::path out(out_dir);
  if (fs::exists(out) && !fs::is_directory(out)) fail("export", "output {} exists and is not a folder", out_dir);
  fs::create_directories(out);
  const LlamaConfig& c = model.config();
  const DType dt = options.dtype;

  // Declared up front in the source's order, then streamed: each tensor is loaded (merged when the
  // source merges an adapter), converted or quantized, written, and its source released.
  auto decoder_linear = [&](const std::string& name) {
    if (!options.quantize_nf4 || name.rfind("model.layers.", 0) != 0) return false;
    for (int proj = 0; proj < kProjCount; ++proj)
      if (name.ends_with("." + std::string(projection_path(proj)) + ".weight")) return true;
    return false;
  };
  std::vector<SafetensorsStreamWriter::Entry> entries;
  std::vector<SafetensorsStreamWriter::Deferred> deferred;
  const std::vector<std::string> names = model.tensor_names();
  for (const std::string& name : names) {
    if (decoder_linear(name))
      declare_bnb_4bit(name, model.expected_shape(name), QuantType::NF4, options.nf4_block_size,
                       options.nf4_double_quant, dtype_str, entries, deferred);
    else
      entries.push_back({name, dt, model.expected_shape(name)});
  }
  SafetensorsStreamWriter writer((out / "model.safetensors").string(), std::move(entries), std::move(deferred),
                                 {{"format", "pt"}});
  const int64_t L = c.num_hidden_layers;
  int64_t layers_done = 0;
  for (const std::string& name : names) {
    const Tensor t = model.load(name);
    if (decoder_linear(name)) {
      // Quantize the merged f32 weight once (merging into 4-bit would round the base twice).
      const Tensor f = t.to(DType::F32);
      write_bnb_4bit(writer, name,
                     BnbWeight{quantize_4bit(f.data<float>(), f.shape(), QuantType::NF4, options.nf4_block_size,
                                             options.nf4_double_quant),
                               dtype_str});
    } else {
      writer.write(name, t.to(dt));
    }
    model.release(name);
    const std::string post = "post_attention_layernorm.weight";
    if (options.progress && name.ends_with("." + post))
      options.progress(++layers_done, L, name.substr(0, name.size() - post.size()));
  }
  writer.commit();
  // A single file replaces any shards an earlier export left there.
  std::error_code ec;
  fs::remove(out / "model.safetensors.index.json", ec);

  json config = model.format() == "hf" && fs::exists(fs::path(model.path()) / "config.json")
                    ? read_json(fs::path(model.path()) / "config.json")
                    : c.to_hf_json();
  config.erase("quantization_config");
  config["torch_dtype"] = dtype_str;
  if (config.contains("dtype")) config["dtype"] = dtype_str;  // transformers >= 4.56 spelling
  if (options.quantize_nf4) config["quantization_config"] = quantization_config_json(options);
  write_text_atomic(out / "config.json", config.dump(2) + "\n");
  write_side_files(model, out, notes);
  return notes;
}

}  // namespace qlora
