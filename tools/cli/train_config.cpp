// Reads, overrides and validates the `qlora train` YAML. One table lists every key with its type,
// so the file, the command line and the printed config share a single spelling.
#include "train_config.h"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <functional>
#include <map>

#include "core/error.h"
#include "core/memory.h"
#include "model/model_options.h"

namespace qlora::cli {

namespace {

using Setter = std::function<void(TrainRunConfig&, const YAML::Node&, const std::string& key)>;
using Getter = std::function<YAML::Node(const TrainRunConfig&)>;

struct Key {
  Setter set;
  Getter get;
};

template <typename T>
T scalar_as(const YAML::Node& node, const std::string& key, const char* type_name) {
  if (!node.IsScalar()) fail("config", "key '{}' must be {}; got a {}", key, type_name, node.IsSequence() ? "list" : "map");
  try {
    return node.as<T>();
  } catch (const YAML::Exception&) {
    fail("config", "key '{}' must be {}; got '{}'", key, type_name, node.Scalar());
  }
}

template <typename T>
Key field(T TrainRunConfig::*member, const char* type_name) {
  return {[member, type_name](TrainRunConfig& c, const YAML::Node& n, const std::string& key) {
            c.*member = scalar_as<T>(n, key, type_name);
          },
          [member](const TrainRunConfig& c) { return YAML::Node(c.*member); }};
}

Key string_list(std::vector<std::string> TrainRunConfig::*member) {
  return {[member](TrainRunConfig& c, const YAML::Node& n, const std::string& key) {
            std::vector<std::string> out;
            if (n.IsScalar()) {  // "q_proj,v_proj" from the command line
              std::string s = n.Scalar(), item;
              for (char ch : s + ",") {
                if (ch == ',') {
                  if (!item.empty()) out.push_back(item);
                  item.clear();
                } else if (ch != ' ') {
                  item += ch;
                }
              }
            } else if (n.IsSequence()) {
              for (const YAML::Node& item : n) out.push_back(scalar_as<std::string>(item, key, "a list of strings"));
            } else {
              fail("config", "key '{}' must be a list of strings", key);
            }
            c.*member = out;
          },
          [member](const TrainRunConfig& c) {
            YAML::Node n(YAML::NodeType::Sequence);
            for (const std::string& s : c.*member) n.push_back(s);
            return n;
          }};
}

void set_dataset(DatasetConfig& d, const YAML::Node& n, const std::string& key) {
  if (n.IsScalar()) {
    d.path = n.Scalar();
    return;
  }
  if (!n.IsMap()) fail("config", "key '{}' must be a map with path, type, fields, weight", key);
  for (const auto& kv : n) {
    const std::string k = kv.first.Scalar();
    const std::string full = key + "." + k;
    if (k == "path") d.path = scalar_as<std::string>(kv.second, full, "a string");
    else if (k == "type") d.type = scalar_as<std::string>(kv.second, full, "a string");
    else if (k == "fields") d.fields = scalar_as<std::string>(kv.second, full, "a string");
    else if (k == "weight") d.weight = scalar_as<double>(kv.second, full, "a number");
    else fail("config", "unknown key '{}'; a dataset has path, type, fields, weight", full);
  }
}

Key datasets_key() {
  return {[](TrainRunConfig& c, const YAML::Node& n, const std::string& key) {
            c.datasets.clear();
            if (n.IsScalar() || n.IsMap()) {
              c.datasets.emplace_back();
              set_dataset(c.datasets.back(), n, key + ".0");
              return;
            }
            if (!n.IsSequence()) fail("config", "key '{}' must be a list of datasets", key);
            for (size_t i = 0; i < n.size(); ++i) {
              c.datasets.emplace_back();
              set_dataset(c.datasets.back(), n[i], key + "." + std::to_string(i));
            }
          },
          [](const TrainRunConfig& c) {
            YAML::Node list(YAML::NodeType::Sequence);
            for (const DatasetConfig& d : c.datasets) {
              YAML::Node m;
              m["path"] = d.path, m["type"] = d.type, m["fields"] = d.fields, m["weight"] = d.weight;
              list.push_back(m);
            }
            return list;
          }};
}

// YAML -> JSON for template variables: maps and lists recursively; a scalar becomes a bool, an
// integer, a number or a string, in that order (YAML 1.2 core schema words for bool and null).
nlohmann::json yaml_to_json(const YAML::Node& n, const std::string& key) {
  if (n.IsMap()) {
    nlohmann::json out = nlohmann::json::object();
    for (const auto& kv : n) out[kv.first.as<std::string>()] = yaml_to_json(kv.second, key + "." + kv.first.as<std::string>());
    return out;
  }
  if (n.IsSequence()) {
    nlohmann::json out = nlohmann::json::array();
    for (const YAML::Node& item : n) out.push_back(yaml_to_json(item, key));
    return out;
  }
  if (!n.IsScalar() || n.Tag() == "~") return nullptr;
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return s;  // quoted: a string whatever it reads like
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  if (s == "null" || s == "Null" || s == "~" || s.empty()) return nullptr;
  int64_t i = 0;
  if (auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), i); ec == std::errc() && end == s.data() + s.size())
    return i;
  double d = 0;
  if (auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), d); ec == std::errc() && end == s.data() + s.size())
    return d;
  return s;
}

YAML::Node json_to_yaml(const nlohmann::json& j) {
  if (j.is_object()) {
    YAML::Node m(YAML::NodeType::Map);
    for (auto it = j.begin(); it != j.end(); ++it) m[it.key()] = json_to_yaml(it.value());
    return m;
  }
  if (j.is_array()) {
    YAML::Node l(YAML::NodeType::Sequence);
    for (const auto& v : j) l.push_back(json_to_yaml(v));
    return l;
  }
  if (j.is_null()) return YAML::Node(YAML::NodeType::Null);
  if (j.is_boolean()) return YAML::Node(j.get<bool>());
  if (j.is_number_integer()) return YAML::Node(j.get<int64_t>());
  if (j.is_number()) return YAML::Node(j.get<double>());
  return YAML::Node(j.get<std::string>());
}

// Emits JSON as YAML, double-quoting every string: a node tree would print the string "true" as
// true, which reads back as a bool (config.yaml is what --resume reads).
void emit_json(YAML::Emitter& out, const nlohmann::json& j) {
  if (j.is_object()) {
    out << YAML::BeginMap;
    for (auto it = j.begin(); it != j.end(); ++it) {
      out << YAML::Key << it.key() << YAML::Value;
      emit_json(out, it.value());
    }
    out << YAML::EndMap;
  } else if (j.is_array()) {
    out << YAML::BeginSeq;
    for (const auto& v : j) emit_json(out, v);
    out << YAML::EndSeq;
  } else if (j.is_string()) {
    out << YAML::DoubleQuoted << j.get<std::string>();
  } else {
    out << json_to_yaml(j);
  }
}

Key template_kwargs_key() {
  return {[](TrainRunConfig& c, const YAML::Node& n, const std::string& key) {
            if (!n.IsMap() && !n.IsNull())
              fail("config", "key '{}' must be a map of template variables (enable_thinking: false); got {}", key,
                   n.IsSequence() ? "a list" : "'" + n.Scalar() + "'");
            c.chat_template_kwargs = n.IsNull() ? nlohmann::json::object() : yaml_to_json(n, key);
          },
          [](const TrainRunConfig& c) { return json_to_yaml(c.chat_template_kwargs); }};
}

Key checkpointing_key() {
  return {[](TrainRunConfig& c, const YAML::Node& n, const std::string& key) {
            const std::string s = n.IsScalar() ? n.Scalar() : "";
            if (s == "true" || s == "True") c.gradient_checkpointing = 1;
            else if (s == "false" || s == "False") c.gradient_checkpointing = 0;
            else c.gradient_checkpointing = scalar_as<int64_t>(n, key, "true, false or a block interval");
          },
          [](const TrainRunConfig& c) { return YAML::Node(c.gradient_checkpointing); }};
}

const std::vector<std::pair<std::string, Key>>& keys() {
  using C = TrainRunConfig;
  static const std::vector<std::pair<std::string, Key>> table = {
      {"base_model", field(&C::base_model, "a path")},
      {"tokenizer", field(&C::tokenizer, "a path")},
      {"method", field(&C::method, "full, lora or qlora")},
      {"compute_dtype", field(&C::compute_dtype, "f32, bf16 or auto")},
      {"lora_r", field(&C::lora_r, "an integer")},
      {"lora_alpha", field(&C::lora_alpha, "a number")},
      {"lora_dropout", field(&C::lora_dropout, "a number")},
      {"use_rslora", field(&C::use_rslora, "true or false")},
      {"lora_target_modules", string_list(&C::lora_target_modules)},
      {"quant_type", field(&C::quant_type, "nf4, fp4 or int4")},
      {"quant_block_size", field(&C::quant_block_size, "an integer")},
      {"double_quant", field(&C::double_quant, "true or false")},
      {"datasets", datasets_key()},
      {"chat_template", field(&C::chat_template, "a template name or a .jinja file")},
      {"chat_template_kwargs", template_kwargs_key()},
      {"sequence_len", field(&C::sequence_len, "an integer")},
      {"sample_packing", field(&C::sample_packing, "true or false")},
      {"train_on_inputs", field(&C::train_on_inputs, "true or false")},
      {"parse_special_in_content", field(&C::parse_special_in_content, "true or false")},
      {"val_set_size", field(&C::val_set_size, "a number")},
      {"val_dataset", field(&C::val_dataset, "a path")},
      {"max_examples", field(&C::max_examples, "an integer")},
      {"micro_batch_size", field(&C::micro_batch_size, "an integer")},
      {"gradient_accumulation_steps", field(&C::gradient_accumulation_steps, "an integer")},
      {"max_steps", field(&C::max_steps, "an integer")},
      {"num_epochs", field(&C::num_epochs, "a number")},
      {"learning_rate", field(&C::learning_rate, "a number")},
      {"lr_scheduler", field(&C::lr_scheduler, "constant, linear or cosine")},
      {"warmup_steps", field(&C::warmup_steps, "an integer")},
      {"weight_decay", field(&C::weight_decay, "a number")},
      {"max_grad_norm", field(&C::max_grad_norm, "a number")},
      {"optimizer", field(&C::optimizer, "adamw or adamw8bit")},
      {"paged_optimizer", field(&C::paged_optimizer, "true or false")},
      {"gradient_checkpointing", checkpointing_key()},
      {"eval_steps", field(&C::eval_steps, "an integer")},
      {"save_steps", field(&C::save_steps, "an integer")},
      {"save_total_limit", field(&C::save_total_limit, "an integer")},
      {"max_consecutive_nonfinite_steps", field(&C::max_consecutive_nonfinite_steps, "an integer")},
      {"sample_prompts", string_list(&C::sample_prompts)},
      {"sample_max_tokens", field(&C::sample_max_tokens, "an integer")},
      {"seed", field(&C::seed, "a non-negative integer")},
      {"output_dir", field(&C::output_dir, "a path")},
      {"threads", field(&C::threads, "an integer")},
      {"memory_budget", field(&C::memory_budget, "a size such as 6GiB")},
  };
  return table;
}

std::string normalise(std::string key) {
  for (char& ch : key)
    if (ch == '-') ch = '_';
  return key;
}

const Key& find_key(const std::string& name) {
  for (const auto& [k, key] : keys())
    if (k == name) return key;
  std::string known;
  for (const auto& [k, key] : keys()) known += (known.empty() ? "" : ", ") + k;
  fail("config", "unknown key '{}'; known keys: {}", name, known);
}

// Sets a dotted key ("datasets.0.path") inside a YAML tree; `text` is the value as given, for
// messages. A numeric part indexes a list and may be at most its size (one past the end appends);
// it is checked before subscripting, since yaml-cpp turns a list subscripted past its end into a
// map and throws BadSubscript for a scalar, neither of which says which override was wrong.
void set_dotted(YAML::Node root, const std::string& dotted, const YAML::Node& value, const std::string& text) {
  std::vector<std::string> parts;
  std::string part;
  for (char ch : dotted + ".") {
    if (ch == '.') parts.push_back(part), part.clear();
    else part += ch;
  }
  const auto not_container = [&](const std::string& name) {
    fail("config", "override --{} {}: '{}' is a single value, not a map or list", dotted, text, name);
  };
  std::vector<YAML::Node> chain = {root};
  std::string walked;  // the parts above chain.back(), for messages
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node parent = chain.back();
    const std::string& p = parts[i];
    if (parent.IsScalar()) not_container(walked);
    const bool index = !p.empty() && std::all_of(p.begin(), p.end(), ::isdigit);
    // A missing or null element becomes an empty map. (Nodes are taken by value from parent[]:
    // assigning to a yaml-cpp Node that already refers to one rebinds that node's contents.)
    const auto child_of = [&](const auto& k) {
      if (!parent[k].IsDefined() || parent[k].IsNull()) parent[k] = YAML::Node(YAML::NodeType::Map);
      return YAML::Node(parent[k]);
    };
    if (index) {
      size_t at = 0;
      const auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), at);
      const size_t size = parent.IsSequence() ? parent.size() : 0;
      if (ec != std::errc() || end != p.data() + p.size() || !parent.IsSequence() || at > size)
        fail("config", "override --{} {}: no list element {} (the list has {})", dotted, text, p, size);
      if (at == size) parent.push_back(YAML::Node(YAML::NodeType::Map));
      chain.push_back(child_of(at));
    } else {
      chain.push_back(child_of(p));
    }
    walked += (walked.empty() ? "" : ".") + p;
  }
  if (chain.back().IsScalar()) not_container(walked);
  chain.back()[parts.back()] = value;
}

// fs::exists that reports a path it cannot check (too long, no permission) as a config error
// naming the key instead of letting std::filesystem_error escape.
bool path_exists(const std::string& path, const std::string& key) {
  std::error_code ec;
  const bool found = std::filesystem::exists(path, ec);
  if (ec) fail("config", "key '{}': cannot check {}: {}", key, path, ec.message());
  return found;
}

void validate(const TrainRunConfig& c) {
  if (c.base_model.empty()) fail("config", "key 'base_model' is required (a model folder, .gguf or .bin file)");
  if (!path_exists(c.base_model, "base_model")) fail("config", "key 'base_model': {} does not exist", c.base_model);
  if (!c.tokenizer.empty() && !path_exists(c.tokenizer, "tokenizer")) fail("config", "key 'tokenizer': {} does not exist", c.tokenizer);
  try {
    train_method_from_name(c.method);
  } catch (const Error&) {
    fail("config", "key 'method' must be full, lora or qlora; got '{}'", c.method);
  }
  if (c.compute_dtype != "f32" && c.compute_dtype != "bf16" && c.compute_dtype != "auto")
    fail("config", "key 'compute_dtype' must be f32, bf16 or auto; got '{}'", c.compute_dtype);
  if (c.datasets.empty()) fail("config", "key 'datasets' is required: at least one dataset file");
  for (size_t i = 0; i < c.datasets.size(); ++i) {
    const DatasetConfig& d = c.datasets[i];
    const std::string key = "datasets." + std::to_string(i);
    if (d.path.empty()) fail("config", "key '{}.path' is required", key);
    if (!path_exists(d.path, key + ".path")) fail("config", "key '{}.path': {} does not exist", key, d.path);
    if (d.weight < 0) fail("config", "key '{}.weight' must be >= 0; got {}", key, d.weight);
  }
  if (!c.val_dataset.empty() && !path_exists(c.val_dataset, "val_dataset"))
    fail("config", "key 'val_dataset': {} does not exist", c.val_dataset);
  auto positive = [](int64_t v, const char* key) {
    if (v <= 0) fail("config", "key '{}' must be > 0; got {}", key, v);
  };
  auto non_negative = [](double v, const char* key) {
    if (v < 0) fail("config", "key '{}' must be >= 0; got {}", key, v);
  };
  positive(c.lora_r, "lora_r");
  positive(c.sequence_len, "sequence_len");
  positive(c.micro_batch_size, "micro_batch_size");
  positive(c.gradient_accumulation_steps, "gradient_accumulation_steps");
  positive(c.sample_max_tokens, "sample_max_tokens");
  non_negative(double(c.max_steps), "max_steps");
  non_negative(c.num_epochs, "num_epochs");
  non_negative(double(c.warmup_steps), "warmup_steps");
  non_negative(double(c.eval_steps), "eval_steps");
  non_negative(double(c.save_steps), "save_steps");
  non_negative(double(c.save_total_limit), "save_total_limit");
  non_negative(double(c.max_consecutive_nonfinite_steps), "max_consecutive_nonfinite_steps");
  non_negative(double(c.gradient_checkpointing), "gradient_checkpointing");
  non_negative(c.val_set_size, "val_set_size");
  non_negative(c.weight_decay, "weight_decay");
  non_negative(double(c.max_examples), "max_examples");
  non_negative(double(c.threads), "threads");
  if (c.max_steps == 0 && c.num_epochs <= 0) fail("config", "set 'max_steps' or 'num_epochs' (both are 0)");
  if (!(c.learning_rate > 0)) fail("config", "key 'learning_rate' must be > 0; got {}", c.learning_rate);
  if (c.lora_alpha <= 0) fail("config", "key 'lora_alpha' must be > 0; got {}", c.lora_alpha);
  if (c.lora_dropout < 0 || c.lora_dropout >= 1)
    fail("config", "key 'lora_dropout' must be in [0, 1); got {}", c.lora_dropout);
  if (c.optimizer != "adamw" && c.optimizer != "adamw8bit")
    fail("config", "key 'optimizer' must be adamw or adamw8bit; got '{}'", c.optimizer);
  if (c.lr_scheduler != "constant" && c.lr_scheduler != "linear" && c.lr_scheduler != "cosine")
    fail("config", "key 'lr_scheduler' must be constant, linear or cosine; got '{}'", c.lr_scheduler);
  if (c.output_dir.empty()) fail("config", "key 'output_dir' must not be empty");
  if (!c.memory_budget.empty()) {
    uint64_t budget = 0;
    try {
      budget = parse_byte_size(c.memory_budget);
    } catch (const Error&) {
    }
    if (budget == 0)
      fail("config", "key 'memory_budget' must be a size such as 6GiB or 512MiB; got '{}'", c.memory_budget);
  }
}

}  // namespace

TrainRunConfig load_train_config(const std::string& path, const std::vector<std::pair<std::string, std::string>>& overrides) {
  YAML::Node root;
  if (!path.empty()) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) fail("config", "config file {} does not exist{}", path, ec ? ": " + ec.message() : "");
    try {
      root = YAML::LoadFile(path);
    } catch (const YAML::Exception& e) {
      fail("config", "{}: line {}: {}", path, e.mark.line + 1, e.msg);
    }
    if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
    if (!root.IsMap()) fail("config", "{}: the top level must be a map of keys", path);
  } else {
    root = YAML::Node(YAML::NodeType::Map);
  }
  for (const auto& [key, text] : overrides) {
    YAML::Node value;
    try {
      value = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      fail("config", "override --{} {}: {}", key, text, e.msg);
    }
    const std::string name = normalise(key);
    find_key(name.substr(0, name.find('.')));  // unknown keys fail here, naming them
    set_dotted(root, name, value, text);
  }
  TrainRunConfig config;
  for (const auto& kv : root) {
    const std::string name = normalise(kv.first.Scalar());
    find_key(name).set(config, kv.second, name);
  }
  validate(config);
  return config;
}

std::string train_config_yaml(const TrainRunConfig& config) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  for (const auto& [name, key] : keys()) {
    out << YAML::Key << name << YAML::Value;
    if (name == "chat_template_kwargs") emit_json(out, config.chat_template_kwargs);
    else out << key.get(config);
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace qlora::cli
