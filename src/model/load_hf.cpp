// Hugging Face folder: config.json plus model.safetensors, or model.safetensors.index.json whose
// weight_map sends each tensor name to a shard. Shards are opened (mapped) on first use.
// bitsandbytes 4-bit checkpoints (transformers' load_in_4bit save_pretrained) load too: their
// packed weights are dequantized to f32 on load.
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/load_common.h"
#include "quant/bnb_format.h"
#include "quant/nf4.h"

namespace qlora {
namespace fs = std::filesystem;

namespace {

std::map<std::string, std::string> read_weight_map(const std::string& index_path) {
  std::ifstream in(index_path);
  if (!in) fail("load", "cannot open {}", index_path);
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    fail("load", "malformed JSON in {}: {}", index_path, e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    fail("load", "{}: expected an object with a 'weight_map' object", index_path);
  std::map<std::string, std::string> map;
  for (const auto& [name, shard] : j["weight_map"].items()) {
    if (!shard.is_string())
      fail("load", "{}: weight_map entry {} must name a shard file; got {}", index_path, name, shard.dump());
    const std::string file = shard.get<std::string>();
    // Shards live beside the index; a path that climbs out of the folder is not a shard.
    if (file.empty() || fs::path(file).is_absolute() || file.find("..") != std::string::npos)
      fail("load", "{}: weight_map entry {} names an invalid shard \"{}\"", index_path, name, file);
    map[name] = file;
  }
  return map;
}

}  // namespace

LlamaModelFile load_hf_folder(const std::string& dir, const LoadOptions& options) {
  const fs::path root(dir);
  const fs::path config_path = root / "config.json";
  if (!fs::exists(config_path))
    fail("load", "{} has no config.json; expected a Hugging Face model folder (config.json + "
                 "model.safetensors)",
         dir);
  LlamaModelFile model;
  model.config = LlamaConfig::from_hf_file(config_path.string());
  model.path = dir;
  model.format = "hf";

  const fs::path single = root / "model.safetensors";
  const fs::path index = root / "model.safetensors.index.json";
  auto shards = std::make_shared<std::map<std::string, SafetensorsFile>>();
  auto open_shard = [&, shards](const std::string& file) -> const SafetensorsFile& {
    auto it = shards->find(file);
    if (it == shards->end()) it = shards->emplace(file, SafetensorsFile::open((root / file).string())).first;
    return it->second;
  };

  std::map<std::string, std::string> weight_map;
  std::string where;
  const bool sharded = fs::exists(index);
  if (sharded) {
    weight_map = read_weight_map(index.string());
    where = index.string();
  } else if (fs::exists(single)) {
    where = single.string();
  } else {
    fail("load", "{} has neither model.safetensors nor model.safetensors.index.json (pytorch_model.bin "
                 "is not supported; convert it to safetensors)",
         dir);
  }

  TensorLookup lookup = [&](const std::string& name) -> std::optional<SourceTensor> {
    std::string file = "model.safetensors";
    if (sharded) {
      auto it = weight_map.find(name);
      if (it == weight_map.end()) return std::nullopt;
      file = it->second;
    }
    const SafetensorsFile& st = open_shard(file);
    if (!st.contains(name)) {
      if (!sharded) return std::nullopt;
      fail("load", "tensor {} is missing from shard {} (named by {})", name, st.path(), where);
    }
    SourceTensor src;
    src.file = st.path();
    src.name_in_file = name;
    if (is_bnb_4bit_weight(st, name)) {
      auto weight = std::make_shared<BnbWeight>(read_bnb_4bit(st, name));
      src.shape = weight->q.shape;
      src.stored_type = "bnb-" + std::string(quant_type_name(weight->q.type));
      src.load = [weight] { return dequantize_4bit(weight->q, DType::F32); };
      return src;
    }
    Tensor t = st.get(name);
    src.shape = t.shape();
    src.stored_type = std::string(dtype_name(t.dtype()));
    src.load = [t] { return t; };
    return src;
  };
  assemble_weights(model, lookup, options, where);
  return model;
}

}  // namespace qlora
