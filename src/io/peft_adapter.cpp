// PEFT adapter folders: adapter_config.json (the fields peft's LoraConfig saves; we write the ones
// every peft >= 0.10 understands) + adapter_model.safetensors (get_peft_model_state_dict keys).
// Tested in tests/unit/test_peft_adapter.cpp and tests/e2e/test_peft_roundtrip.cpp.
#include "io/peft_adapter.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/projections.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"

namespace qlora {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kModelFile = "adapter_model.safetensors";
constexpr const char* kKeyPrefix = "base_model.model.";

// "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight" -> ("model.layers.3.self_attn.q_proj", 'A').
// Returns false for anything that is not a LoRA A/B key of a Llama decoder projection.
bool split_key(const std::string& key, std::string& module, char& which) {
  const std::string prefix = kKeyPrefix;
  for (const char w : {'A', 'B'}) {
    const std::string suffix = std::string(".lora_") + w + ".weight";
    if (key.size() > prefix.size() + suffix.size() && key.rfind(prefix, 0) == 0 &&
        key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0) {
      module = key.substr(prefix.size(), key.size() - prefix.size() - suffix.size());
      which = w;
      return true;
    }
  }
  return false;
}

std::string leaf(const std::string& module) {
  const size_t dot = module.rfind('.');
  return dot == std::string::npos ? module : module.substr(dot + 1);
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("peft", "cannot open {}", path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

PeftAdapterConfig parse_config(const json& j, const std::string& path) {
  auto key_of = [&](const char* key) -> const json& {
    if (!j.contains(key) || j[key].is_null()) fail("peft", "{}: key '{}' is missing", path, key);
    return j[key];
  };
  auto wrong = [&](const char* key, const char* expected) {
    fail("peft", "{}: key '{}': expected {}, got {}", path, key, expected, j[key].dump());
  };
  if (!j.is_object()) fail("peft", "{}: expected a JSON object", path);
  const json& type = key_of("peft_type");
  if (!type.is_string() || type.get<std::string>() != "LORA") wrong("peft_type", "\"LORA\"");
  if (j.contains("task_type") && !j["task_type"].is_null() &&
      (!j["task_type"].is_string() || j["task_type"].get<std::string>() != "CAUSAL_LM"))
    wrong("task_type", "\"CAUSAL_LM\" (or null)");

  PeftAdapterConfig c;
  const json& r = key_of("r");
  if (!r.is_number_integer() || r.get<int64_t>() < 1) wrong("r", "a positive integer");
  c.r = r.get<int64_t>();
  const json& alpha = key_of("lora_alpha");
  if (!alpha.is_number() || alpha.get<double>() <= 0) wrong("lora_alpha", "a positive number");
  c.lora_alpha = alpha.get<double>();
  if (j.contains("lora_dropout") && !j["lora_dropout"].is_null()) {
    if (!j["lora_dropout"].is_number()) wrong("lora_dropout", "a number in [0, 1)");
    c.lora_dropout = j["lora_dropout"].get<double>();
    if (c.lora_dropout < 0 || c.lora_dropout >= 1) wrong("lora_dropout", "a number in [0, 1)");
  }
  if (j.contains("use_rslora") && !j["use_rslora"].is_null()) {
    if (!j["use_rslora"].is_boolean()) wrong("use_rslora", "a bool");
    c.use_rslora = j["use_rslora"].get<bool>();
  }
  const json& targets = key_of("target_modules");
  if (targets.is_string()) {
    // peft treats a string as a regex over full module names, or "all-linear".
    if (targets.get<std::string>() == "all-linear") {
      c.target_modules = all_projection_names();
      std::sort(c.target_modules.begin(), c.target_modules.end());  // peft saves the set sorted
    }
    else
      fail("peft", "{}: key 'target_modules' is the regex \"{}\"; only a list of module names (or \"all-linear\") "
                   "is supported",
           path, targets.get<std::string>());
  } else if (targets.is_array() && !targets.empty()) {
    for (const json& t : targets) {
      if (!t.is_string()) wrong("target_modules", "a list of module names");
      const std::string name = t.get<std::string>();
      if (projection_index(name) < 0 && !is_moe_module_name(name))
        fail("peft", "{}: key 'target_modules' names '{}'; supported: {}, and on an MoE model {}", path, name,
             projection_list(), kMoeModuleList);
      c.target_modules.push_back(name);
    }
  } else {
    wrong("target_modules", "a non-empty list of module names");
  }
  if (j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string())
    c.base_model_name_or_path = j["base_model_name_or_path"].get<std::string>();

  // Features that would change the math: refuse rather than silently load a different model.
  auto refuse_true = [&](const char* key) {
    if (j.contains(key) && j[key].is_boolean() && j[key].get<bool>())
      fail("peft", "{}: key '{}' is true; not supported", path, key);
  };
  refuse_true("use_dora");
  refuse_true("fan_in_fan_out");
  refuse_true("lora_bias");
  if (j.contains("bias") && j["bias"].is_string() && j["bias"].get<std::string>() != "none")
    fail("peft", "{}: key 'bias' is \"{}\"; only \"none\" is supported", path, j["bias"].get<std::string>());
  for (const char* key : {"rank_pattern", "alpha_pattern"})
    if (j.contains(key) && j[key].is_object() && !j[key].empty())
      fail("peft", "{}: key '{}' is not empty; per-module ranks/alphas are not supported", path, key);
  if (j.contains("modules_to_save") && j["modules_to_save"].is_array() && !j["modules_to_save"].empty())
    fail("peft", "{}: key 'modules_to_save' is not empty; only LoRA weights are supported", path);
  return c;
}

json config_json(const PeftAdapterConfig& c) {
  std::vector<std::string> targets = c.target_modules;
  std::sort(targets.begin(), targets.end());  // peft stores a set; save_pretrained lists it
  json j;
  j["alpha_pattern"] = json::object();
  j["auto_mapping"] = nullptr;
  j["base_model_name_or_path"] = c.base_model_name_or_path.empty() ? json(nullptr) : json(c.base_model_name_or_path);
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = true;
  j["layer_replication"] = nullptr;
  j["layers_pattern"] = nullptr;
  j["layers_to_transform"] = nullptr;
  j["loftq_config"] = json::object();
  // peft writes an integral alpha as an int (it is usually typed int).
  if (c.lora_alpha == std::floor(c.lora_alpha) && std::abs(c.lora_alpha) < 1e15)
    j["lora_alpha"] = int64_t(c.lora_alpha);
  else
    j["lora_alpha"] = c.lora_alpha;
  j["lora_dropout"] = c.lora_dropout;
  j["megatron_config"] = nullptr;
  j["megatron_core"] = "megatron.core";
  j["modules_to_save"] = nullptr;
  j["peft_type"] = "LORA";
  j["r"] = c.r;
  j["rank_pattern"] = json::object();
  j["revision"] = nullptr;
  j["target_modules"] = targets;
  j["task_type"] = "CAUSAL_LM";
  j["use_dora"] = false;
  j["use_rslora"] = c.use_rslora;
  return j;
}

// Every module has both A and B, with A (r, in) and B (out, r); every key is a LoRA key of a
// targeted module. `file` names the safetensors file in messages.
void validate_tensors(const PeftAdapter& a, const std::string& file) {
  std::map<std::string, std::pair<const Tensor*, const Tensor*>> modules;
  for (const auto& [key, t] : a.tensors) {
    std::string module;
    char which = 0;
    if (!split_key(key, module, which))
      fail("peft", "{}: key '{}' is not a LoRA weight (expected base_model.model.<module>.lora_A.weight or "
                   "lora_B.weight)",
           file, key);
    const std::string l = leaf(module);
    if (std::find(a.config.target_modules.begin(), a.config.target_modules.end(), l) == a.config.target_modules.end())
      fail("peft", "{}: key '{}' belongs to module '{}', which is not in target_modules", file, key, l);
    if (t.ndim() != 2) fail("peft", "{}: key '{}' has shape {}; expected a matrix", file, key, shape_str(t.shape()));
    auto& slot = modules[module];
    (which == 'A' ? slot.first : slot.second) = &t;
  }
  if (modules.empty()) fail("peft", "{}: holds no LoRA weights", file);
  for (const auto& [module, ab] : modules) {
    const std::string base = std::string(kKeyPrefix) + module;
    if (!ab.first) fail("peft", "{}: key '{}.lora_A.weight' is missing (its lora_B is present)", file, base);
    if (!ab.second) fail("peft", "{}: key '{}.lora_B.weight' is missing (its lora_A is present)", file, base);
    if (ab.first->dim(0) != a.config.r)
      fail("peft", "{}: key '{}.lora_A.weight' has shape {}; expected rank r = {} rows (adapter_config.json)", file,
           base, shape_str(ab.first->shape()), a.config.r);
    if (ab.second->dim(1) != a.config.r)
      fail("peft", "{}: key '{}.lora_B.weight' has shape {}; expected rank r = {} columns (adapter_config.json)",
           file, base, shape_str(ab.second->shape()), a.config.r);
  }
}

}  // namespace

double PeftAdapterConfig::scale() const {
  return use_rslora ? lora_alpha / std::sqrt(double(r)) : lora_alpha / double(r);
}

std::pair<Tensor, Tensor> PeftAdapter::module(const std::string& module_name) const {
  const std::string base = std::string(kKeyPrefix) + module_name;
  Tensor a, b;
  for (const auto& [key, t] : tensors) {
    if (key == base + ".lora_A.weight") a = t;
    if (key == base + ".lora_B.weight") b = t;
  }
  return {a, b};
}

PeftLoraKey parse_peft_lora_key(const std::string& key, std::string_view stage) {
  constexpr std::string_view kLayersPrefix = "base_model.model.model.layers.";
  auto bad = [&](std::string_view why) -> PeftLoraKey {
    fail(stage, "adapter tensor {}: {}; expected {}<i>.<module>.lora_<A|B>.weight", key, why, kLayersPrefix);
  };
  std::string_view k = key;
  if (!k.starts_with(kLayersPrefix)) return bad("not a decoder-layer LoRA weight");
  k.remove_prefix(kLayersPrefix.size());
  PeftLoraKey out;
  const auto [end, ec] = std::from_chars(k.data(), k.data() + k.size(), out.layer);
  if (ec != std::errc() || end == k.data() || end == k.data() + k.size() || *end != '.')
    return bad("no layer index");
  k.remove_prefix(size_t(end - k.data()) + 1);
  constexpr std::string_view kA = ".lora_A.weight", kB = ".lora_B.weight";
  if (k.ends_with(kA)) {
    out.is_a = true;
    k.remove_suffix(kA.size());
  } else if (k.ends_with(kB)) {
    k.remove_suffix(kB.size());
  } else {
    return bad("not a lora_A/lora_B weight");
  }
  if (k.empty()) return bad("no module name");
  out.module = std::string(k);
  return out;
}

PeftAdapter read_peft_adapter(const std::string& dir) {
  const fs::path root(dir);
  if (!fs::is_directory(root)) fail("peft", "adapter folder {} does not exist", dir);
  const fs::path config_path = root / kConfigFile;
  const fs::path model_path = root / kModelFile;
  if (!fs::exists(config_path)) fail("peft", "{} is missing (not a PEFT adapter folder)", config_path.string());
  if (!fs::exists(model_path)) {
    if (fs::exists(root / "adapter_model.bin"))
      fail("peft", "{}: only adapter_model.safetensors is supported, found adapter_model.bin", dir);
    fail("peft", "{} is missing", model_path.string());
  }
  json j;
  try {
    j = json::parse(read_text(config_path));
  } catch (const json::exception& e) {
    fail("peft", "{}: malformed JSON: {}", config_path.string(), e.what());
  }
  PeftAdapter a;
  a.config = parse_config(j, config_path.string());
  const SafetensorsFile st = SafetensorsFile::open(model_path.string());
  for (const std::string& name : st.names()) {
    const Tensor t = st.get(name);
    if (t.dtype() != DType::F32 && t.dtype() != DType::BF16 && t.dtype() != DType::F16)
      fail("peft", "{}: key '{}' has dtype {}; expected f32, bf16 or f16", model_path.string(), name,
           dtype_name(t.dtype()));
    a.tensors.emplace_back(name, t.dtype() == DType::F32 ? t.clone() : t.to(DType::F32));
  }
  validate_tensors(a, model_path.string());
  return a;
}

static void write_config_file(const fs::path& path, const PeftAdapterConfig& config) {
  write_file_atomically(path.string(), config_json(config).dump(2) + "\n", "peft");
}

void write_peft_adapter(const std::string& dir, const PeftAdapter& adapter) {
  validate_tensors(adapter, dir + "/" + kModelFile);
  const fs::path target(dir);
  try {
    if (fs::exists(target)) {
      // An existing folder may hold other files (a training output dir): replace our two files,
      // each atomically (write_safetensors renames a temp file; the config likewise).
      if (!fs::is_directory(target)) fail("peft", "{} exists and is not a folder", dir);
      write_safetensors((target / kModelFile).string(), adapter.tensors, {{"format", "pt"}});
      write_config_file(target / kConfigFile, adapter.config);
      return;
    }
    // A new folder appears complete or not at all.
    AtomicDirectory tmp(target.string(), "peft");
    write_safetensors((fs::path(tmp.path()) / kModelFile).string(), adapter.tensors, {{"format", "pt"}});
    write_config_file(fs::path(tmp.path()) / kConfigFile, adapter.config);
    tmp.commit();
  } catch (const fs::filesystem_error& e) {
    fail("peft", "cannot write adapter to {}: {}", dir, e.what());
  }
}

}  // namespace qlora
