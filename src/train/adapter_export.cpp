// TrainModel <-> PeftAdapter. See adapter_export.h.
#include "train/adapter_export.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include <fmt/ranges.h>

#include "core/error.h"
#include "io/safetensors.h"

namespace qlora {

namespace {
std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}
}  // namespace

PeftAdapter read_adapter_source(const std::string& dir, double lora_alpha) {
  namespace fs = std::filesystem;
  const fs::path root(dir);
  if (fs::exists(root / "adapter_config.json") && fs::exists(root / "adapter_model.safetensors"))
    return read_peft_adapter(dir);
  const fs::path model_path = root / "model.safetensors";
  const fs::path state_path = root / "trainer_state.json";
  if (!fs::exists(model_path) || !fs::exists(state_path))
    fail("peft", "{} is neither a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) nor a "
                 "training checkpoint (model.safetensors + trainer_state.json)",
         dir);
  PeftAdapter a;
  const SafetensorsFile st = SafetensorsFile::open(model_path.string());
  std::set<std::string> targets;
  for (const std::string& name : st.names()) {
    const size_t at = name.find(".lora_A.weight");
    const size_t bt = name.find(".lora_B.weight");
    if (at == std::string::npos && bt == std::string::npos)
      fail("peft", "{}: key '{}' is not a LoRA weight; a full fine-tuning checkpoint has no adapter to export",
           model_path.string(), name);
    const std::string module = name.substr(0, at != std::string::npos ? at : bt);
    targets.insert(module.substr(module.rfind('.') + 1));
    const Tensor t = st.get(name);
    a.tensors.emplace_back(name, t.dtype() == DType::F32 ? t.clone() : t.to(DType::F32));
    if (at != std::string::npos) a.config.r = t.dim(0);
  }
  a.config.target_modules.assign(targets.begin(), targets.end());

  auto read_json = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return nlohmann::json::parse(ss.str(), nullptr, false);
  };
  bool have_alpha = false;
  for (const fs::path& cfg : {root / "adapter_config.json", root.parent_path() / "adapter_config.json"}) {
    if (have_alpha || !fs::exists(cfg)) continue;
    const nlohmann::json j = read_json(cfg);
    if (j.is_discarded() || !j.contains("lora_alpha") || !j["lora_alpha"].is_number())
      fail("peft", "{}: key 'lora_alpha' is missing or not a number", cfg.string());
    a.config.lora_alpha = j["lora_alpha"].get<double>();
    a.config.use_rslora = j.value("use_rslora", false);
    a.config.lora_dropout = j.value("lora_dropout", 0.0);
    if (j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string())
      a.config.base_model_name_or_path = j["base_model_name_or_path"].get<std::string>();
    have_alpha = true;
  }
  if (!have_alpha) {
    const nlohmann::json j = read_json(state_path);
    if (!j.is_discarded() && j.contains("lora") && j["lora"].is_object() && j["lora"].contains("lora_alpha")) {
      const nlohmann::json& l = j["lora"];
      a.config.lora_alpha = l["lora_alpha"].get<double>();
      a.config.use_rslora = l.value("use_rslora", false);
      a.config.lora_dropout = l.value("lora_dropout", 0.0);
      have_alpha = true;
    }
  }
  if (lora_alpha > 0) {
    a.config.lora_alpha = lora_alpha;
    have_alpha = true;
  }
  if (!have_alpha)
    fail("peft", "{}: a training checkpoint does not record lora_alpha (no adapter_config.json here or in the parent "
                 "folder, no 'lora' in trainer_state.json); pass --lora-alpha",
         dir);
  // Same checks as reading a PEFT folder (both A and B, ranks): write to memory via the validator.
  for (const auto& [key, t] : a.tensors) {
    const bool is_a = key.find(".lora_A.") != std::string::npos;
    if (t.ndim() != 2 || (is_a ? t.dim(0) : t.dim(1)) != a.config.r)
      fail("peft", "{}: key '{}' has shape {}; expected rank {}", model_path.string(), key, shape_str(t.shape()),
           a.config.r);
  }
  return a;
}

PeftAdapter peft_adapter_from_model(TrainModel& model, const std::string& base_model_name_or_path) {
  if (model.options().method == TrainMethod::Full)
    fail("peft", "the model is trained with method 'full'; it has no LoRA adapter to export (merge/save the "
                 "full model instead)");
  const LoraConfig& lora = model.options().lora;
  PeftAdapter a;
  a.config.r = lora.r;
  a.config.lora_alpha = lora.lora_alpha;
  a.config.lora_dropout = lora.lora_dropout;
  a.config.use_rslora = lora.use_rslora;
  a.config.target_modules = lora.target_modules;
  a.config.base_model_name_or_path = base_model_name_or_path;
  for (Param& p : model.parameters()) {
    if (p.name.find(".lora_A.") == std::string::npos && p.name.find(".lora_B.") == std::string::npos) continue;
    const Tensor host = model.backend().to_host(p.value);
    a.tensors.emplace_back(p.name, host.dtype() == DType::F32 ? host.clone() : host.to(DType::F32));
  }
  if (a.tensors.empty()) fail("peft", "the model has no LoRA parameters to export");
  return a;
}

LoraConfig lora_config_from_adapter(const PeftAdapterConfig& config) {
  LoraConfig c;
  c.r = config.r;
  c.lora_alpha = config.lora_alpha;
  c.lora_dropout = config.lora_dropout;
  c.use_rslora = config.use_rslora;
  c.target_modules = config.target_modules;
  return c;
}

void load_adapter_into_model(TrainModel& model, const PeftAdapter& adapter) {
  if (model.options().method == TrainMethod::Full)
    fail("peft", "cannot load a LoRA adapter into a model trained with method 'full'");
  const LoraConfig& lora = model.options().lora;
  const PeftAdapterConfig& c = adapter.config;
  if (c.r != lora.r) fail("peft", "adapter key 'r' is {}; the model's LoRA rank is {}", c.r, lora.r);
  if (std::abs(c.scale() - lora.scale()) > 1e-12 * std::abs(lora.scale()))
    fail("peft", "adapter scale (lora_alpha {}, use_rslora {}) is {}; the model's is {} (lora_alpha {}, use_rslora {})",
         c.lora_alpha, c.use_rslora, c.scale(), lora.scale(), lora.lora_alpha, lora.use_rslora);
  if (sorted(c.target_modules) != sorted(lora.target_modules))
    fail("peft", "adapter key 'target_modules' ({}) differs from the model's ({})",
         fmt::format("{}", fmt::join(sorted(c.target_modules), ", ")),
         fmt::format("{}", fmt::join(sorted(lora.target_modules), ", ")));

  std::map<std::string, const Tensor*> by_name;
  for (const auto& [key, t] : adapter.tensors) by_name[key] = &t;
  std::vector<Param> params = model.parameters();
  size_t used = 0;
  // Validate everything before changing anything, so a failed load leaves the model as it was.
  for (const Param& p : params) {
    auto it = by_name.find(p.name);
    if (it == by_name.end()) fail("peft", "adapter has no key '{}' (the model has it)", p.name);
    if (it->second->shape() != p.value.shape())
      fail("peft", "adapter key '{}' has shape {}; the model expects {}", p.name, shape_str(it->second->shape()),
           shape_str(p.value.shape()));
    ++used;
  }
  if (used != by_name.size()) {
    for (const auto& [key, t] : by_name) {
      const bool known =
          std::any_of(params.begin(), params.end(), [&key = key](const Param& p) { return p.name == key; });
      if (!known) fail("peft", "adapter key '{}' has no matching module in the model", key);
    }
  }
  for (Param& p : params) model.backend().upload(p.value, by_name.at(p.name)->to(p.value.dtype()).raw());
  model.parameters_updated();
}

}  // namespace qlora
