// GGUF <-> HF tokenizer files for model export. See tokenizer_export.h.
#include "model/tokenizer_export.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/error.h"

namespace qlora {
namespace {

using ojson = nlohmann::ordered_json;

// llama.cpp token types (llama_token_type): 1 normal, 2 unknown, 3 control, 4 user-defined,
// 5 unused, 6 byte.
constexpr int64_t kControl = 3, kUserDefined = 4;

// The split regexes of the models' own tokenizer.json files, with (?i:...) spelled out so every
// regex engine (ours included) reads them alike.
constexpr const char* kLlama3Split =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Split =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

ojson byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

ojson pre_tokenizer_for(const std::string& pre) {
  auto split = [](const char* regex) {
    return ojson{{"type", "Sequence"},
                 {"pretokenizers",
                  {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}},
                   byte_level(false)}}};
  };
  if (pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe" || pre == "smaug-bpe" || pre == "falcon3")
    return split(kLlama3Split);
  if (pre == "qwen2" || pre == "deepseek-r1-qwen") return split(kQwen2Split);
  if (pre == "smollm" || pre == "starcoder" || pre == "refact")
    return {{"type", "Sequence"},
            {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)}}};
  return byte_level(true);  // "gpt2" / "default"
}

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) fail("export", "cannot open {}", p.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

HfTokenizerFiles hf_tokenizer_from_gguf(const GgufFile& g) {
  const std::string& path = g.path();
  auto str = [&](const char* key) { return g.get(key).as_string(key); };
  const std::string model = g.has("tokenizer.ggml.model") ? str("tokenizer.ggml.model") : "";
  if (model != "gpt2")
    fail("export", "{}: tokenizer.ggml.model is '{}'; only byte-level BPE ('gpt2') converts to tokenizer.json", path,
         model);
  const GgufArray& tokens = g.get("tokenizer.ggml.tokens").as_array("tokenizer.ggml.tokens");
  const GgufArray* types = g.has("tokenizer.ggml.token_type")
                               ? &g.get("tokenizer.ggml.token_type").as_array("tokenizer.ggml.token_type")
                               : nullptr;
  const std::string pre = g.has("tokenizer.ggml.pre") ? str("tokenizer.ggml.pre") : "default";

  HfTokenizerFiles out;
  ojson vocab = ojson::object();
  ojson added = ojson::array();
  ojson added_decoder = ojson::object();
  for (size_t id = 0; id < tokens.size(); ++id) {
    const std::string& text = tokens[id].as_string("tokenizer.ggml.tokens");
    vocab[text] = id;
    const int64_t type = types ? (*types)[id].as_int("tokenizer.ggml.token_type") : 1;
    if (type == kControl || type == kUserDefined) {
      ojson t = {{"id", id},          {"content", text},      {"single_word", false}, {"lstrip", false},
                 {"rstrip", false},   {"normalized", false},  {"special", type == kControl}};
      added.push_back(t);
      ojson d = t;
      d.erase("id");
      added_decoder[std::to_string(id)] = d;
    }
  }
  ojson merges = ojson::array();
  if (g.has("tokenizer.ggml.merges"))
    for (const GgufValue& m : g.get("tokenizer.ggml.merges").as_array("tokenizer.ggml.merges"))
      merges.push_back(m.as_string("tokenizer.ggml.merges"));

  ojson& t = out.tokenizer;
  t["version"] = "1.0";
  t["truncation"] = nullptr;
  t["padding"] = nullptr;
  t["added_tokens"] = added;
  t["normalizer"] = nullptr;
  t["pre_tokenizer"] = pre_tokenizer_for(pre);
  t["post_processor"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
  t["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  t["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", merges}};

  ojson& c = out.tokenizer_config;
  auto token_of = [&](const char* key) -> ojson {
    if (!g.has(key)) return nullptr;
    const int64_t id = g.get(key).as_int(key);
    if (id < 0 || size_t(id) >= tokens.size()) return nullptr;
    return tokens[size_t(id)].as_string("tokenizer.ggml.tokens");
  };
  c["add_bos_token"] = g.has("tokenizer.ggml.add_bos_token") &&
                       g.get("tokenizer.ggml.add_bos_token").as_bool("tokenizer.ggml.add_bos_token");
  c["add_eos_token"] = g.has("tokenizer.ggml.add_eos_token") &&
                       g.get("tokenizer.ggml.add_eos_token").as_bool("tokenizer.ggml.add_eos_token");
  c["add_prefix_space"] = false;
  c["added_tokens_decoder"] = added_decoder;
  c["bos_token"] = token_of("tokenizer.ggml.bos_token_id");
  if (g.has("tokenizer.chat_template")) c["chat_template"] = str("tokenizer.chat_template");
  c["clean_up_tokenization_spaces"] = false;
  c["eos_token"] = token_of("tokenizer.ggml.eos_token_id");
  c["model_max_length"] = g.has("general.architecture") &&
                                  g.has(str("general.architecture") + ".context_length")
                              ? ojson(g.get(str("general.architecture") + ".context_length").as_int("context_length"))
                              : ojson(2048);
  c["pad_token"] = token_of("tokenizer.ggml.padding_token_id");
  c["tokenizer_class"] = "GPT2Tokenizer";
  c["unk_token"] = token_of("tokenizer.ggml.unknown_token_id");
  return out;
}

void copy_gguf_tokenizer(const GgufFile& g, GgufWriter& out) {
  // The types llama.cpp's loader insists on (it checks them); others keep a type inferred below.
  static const std::map<std::string, std::pair<GgufType, GgufType>> kTypes = {
      {"tokenizer.ggml.model", {GgufType::STRING, GgufType::U8}},
      {"tokenizer.ggml.pre", {GgufType::STRING, GgufType::U8}},
      {"tokenizer.ggml.tokens", {GgufType::ARRAY, GgufType::STRING}},
      {"tokenizer.ggml.merges", {GgufType::ARRAY, GgufType::STRING}},
      {"tokenizer.ggml.token_type", {GgufType::ARRAY, GgufType::I32}},
      {"tokenizer.ggml.scores", {GgufType::ARRAY, GgufType::F32}},
      {"tokenizer.chat_template", {GgufType::STRING, GgufType::U8}},
  };
  for (const auto& [key, value] : g.metadata()) {
    if (key.rfind("tokenizer.", 0) != 0) continue;
    auto it = kTypes.find(key);
    if (it != kTypes.end()) {
      out.add_value(key, value, it->second.first, it->second.second);
    } else if (value.is_string()) {
      out.add_value(key, value, GgufType::STRING);
    } else if (std::holds_alternative<bool>(value.value)) {
      out.add_value(key, value, GgufType::BOOL);
    } else if (std::holds_alternative<double>(value.value)) {
      out.add_value(key, value, GgufType::F32);
    } else if (std::holds_alternative<uint64_t>(value.value) || std::holds_alternative<int64_t>(value.value)) {
      // *_token_id and friends are u32 in every llama.cpp writer.
      out.add_value(key, value, GgufType::U32);
    }
    // Other arrays (rare: e.g. precompiled charsmap) are left out.
  }
}

bool gguf_tokenizer_from_hf(const std::string& hf_dir, GgufWriter& out) {
  namespace fs = std::filesystem;
  const fs::path tok_path = fs::path(hf_dir) / "tokenizer.json";
  if (!fs::exists(tok_path)) return false;
  ojson j;
  try {
    j = ojson::parse(read_text(tok_path));
  } catch (const ojson::exception& e) {
    fail("export", "{}: malformed JSON: {}", tok_path.string(), e.what());
  }
  if (!j.contains("model") || j["model"].value("type", "") != "BPE" || j["model"].value("byte_fallback", false))
    return false;
  const std::string dump_pre = j.contains("pre_tokenizer") ? j["pre_tokenizer"].dump() : "";
  if (dump_pre.find("ByteLevel") == std::string::npos) return false;

  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  auto put = [&](int64_t id, const std::string& text, int32_t type) {
    if (id < 0) return;
    if (size_t(id) >= tokens.size()) {
      tokens.resize(size_t(id) + 1);
      types.resize(size_t(id) + 1, 5);
    }
    tokens[size_t(id)] = text;
    types[size_t(id)] = type;
  };
  for (const auto& [text, id] : j["model"]["vocab"].items()) put(id.get<int64_t>(), text, 1);
  std::map<std::string, int64_t> id_of;
  if (j.contains("added_tokens"))
    for (const auto& t : j["added_tokens"]) {
      put(t["id"].get<int64_t>(), t["content"].get<std::string>(), t.value("special", false) ? kControl : kUserDefined);
    }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (types[i] == 5 && tokens[i].empty()) tokens[i] = "[PAD" + std::to_string(i) + "]";
    id_of[tokens[i]] = int64_t(i);
  }
  std::vector<std::string> merges;
  for (const auto& m : j["model"]["merges"])
    merges.push_back(m.is_string() ? m.get<std::string>() : m[0].get<std::string>() + " " + m[1].get<std::string>());
  std::string pre = "gpt2";
  if (dump_pre.find("Digits") != std::string::npos) pre = "smollm";
  else if (dump_pre.find("\\\\p{N}{1,3}") != std::string::npos) pre = "llama-bpe";
  else if (dump_pre.find("Split") != std::string::npos) pre = "qwen2";

  out.add_string("tokenizer.ggml.model", "gpt2");
  out.add_string("tokenizer.ggml.pre", pre);
  out.add_string_array("tokenizer.ggml.tokens", tokens);
  out.add_i32_array("tokenizer.ggml.token_type", types);
  out.add_string_array("tokenizer.ggml.merges", merges);

  const fs::path cfg_path = fs::path(hf_dir) / "tokenizer_config.json";
  if (fs::exists(cfg_path)) {
    ojson c = ojson::parse(read_text(cfg_path), nullptr, false);
    if (!c.is_discarded() && c.is_object()) {
      auto token_id = [&](const char* field, const char* key) {
        if (!c.contains(field)) return;
        const ojson& v = c[field];
        const std::string text = v.is_string() ? v.get<std::string>() : v.is_object() ? v.value("content", "") : "";
        auto it = id_of.find(text);
        if (it != id_of.end()) out.add_u32(key, uint32_t(it->second));
      };
      token_id("bos_token", "tokenizer.ggml.bos_token_id");
      token_id("eos_token", "tokenizer.ggml.eos_token_id");
      token_id("unk_token", "tokenizer.ggml.unknown_token_id");
      token_id("pad_token", "tokenizer.ggml.padding_token_id");
      if (c.contains("add_bos_token") && c["add_bos_token"].is_boolean())
        out.add_bool("tokenizer.ggml.add_bos_token", c["add_bos_token"].get<bool>());
      if (c.contains("chat_template") && c["chat_template"].is_string())
        out.add_string("tokenizer.chat_template", c["chat_template"].get<std::string>());
    }
  }
  return true;
}

}  // namespace qlora
