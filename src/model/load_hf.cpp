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
#include "io/json_unique.h"
#include "io/safetensors.h"
#include "model/load_common.h"
#include "model/model_source.h"
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
  std::optional<std::string> duplicate;
  try {
    const std::string text = ss.str();
    j = parse_json_unique_keys<nlohmann::json>(text.begin(), text.end(), duplicate);
  } catch (const nlohmann::json::exception& e) {
    fail("load", "malformed JSON in {}: {}", index_path, e.what());
  }
  if (duplicate) fail("load", "{}: names {} twice", index_path, *duplicate);
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

ModelSource open_hf_folder(const std::string& dir) {
  const fs::path root(dir);
  const fs::path config_path = root / "config.json";
  if (!fs::exists(config_path))
    fail("load", "{} has no config.json; expected a Hugging Face model folder (config.json + "
                 "model.safetensors)",
         dir);
  LlamaConfig config = LlamaConfig::from_hf_file(config_path.string());

  // What the lookup owns: the weight map and the shards, each mapped on first use.
  struct Index {
    fs::path root;
    bool sharded = false;
    std::string where;
    std::map<std::string, std::string> weight_map;
    std::map<std::string, SafetensorsFile> shards;
    const SafetensorsFile& shard(const std::string& file) {
      auto it = shards.find(file);
      if (it == shards.end()) it = shards.emplace(file, SafetensorsFile::open((root / file).string())).first;
      return it->second;
    }
  };
  auto index = std::make_shared<Index>();
  index->root = root;
  const fs::path single = root / "model.safetensors";
  const fs::path index_path = root / "model.safetensors.index.json";
  index->sharded = fs::exists(index_path);
  if (index->sharded) {
    index->weight_map = read_weight_map(index_path.string());
    index->where = index_path.string();
  } else if (fs::exists(single)) {
    index->where = single.string();
  } else {
    fail("load", "{} has neither model.safetensors nor model.safetensors.index.json (pytorch_model.bin "
                 "is not supported; convert it to safetensors)",
         dir);
  }

  TensorLookup lookup = [index](const std::string& name) -> std::optional<SourceTensor> {
    std::string file = "model.safetensors";
    if (index->sharded) {
      auto it = index->weight_map.find(name);
      if (it == index->weight_map.end()) return std::nullopt;
      file = it->second;
    }
    const SafetensorsFile& st = index->shard(file);
    if (!st.contains(name)) {
      if (!index->sharded) return std::nullopt;
      fail("load", "tensor {} is missing from shard {} (named by {})", name, st.path(), index->where);
    }
    SourceTensor src;
    src.file = st.path();
    src.name_in_file = name;
    const SafetensorsFile* file_ptr = &st;  // stable: std::map nodes do not move
    if (is_bnb_4bit_weight(st, name)) {
      const BnbWeight header = read_bnb_4bit_header(st, name);
      src.shape = header.q.shape;
      src.stored_type = "bnb-" + std::string(quant_type_name(header.q.type));
      src.load_quantized = [index, file_ptr, name] { return read_bnb_4bit(*file_ptr, name).q; };
      src.load = [index, file_ptr, name] { return dequantize_4bit(read_bnb_4bit(*file_ptr, name).q, DType::F32); };
      src.release = [index, file_ptr, name] { release_bnb_4bit(*file_ptr, name); };
      return src;
    }
    src.shape = st.shape(name);
    src.stored_type = std::string(dtype_name(st.dtype(name)));
    src.load = [index, file_ptr, name] { return file_ptr->get(name); };
    src.release = [index, file_ptr, name] { file_ptr->release(name); };
    return src;
  };
  return ModelSource(std::move(config), dir, "hf", index->where, std::move(lookup));
}

}  // namespace qlora
