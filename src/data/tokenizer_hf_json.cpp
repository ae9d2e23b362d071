// Hugging Face tokenizer.json reader (huggingface/tokenizers serialization) for model type "BPE":
// - byte-level (a ByteLevel pre-tokenizer or decoder): vocab and merges are spelled with GPT-2's
//   byte characters; the pre_tokenizer (Split regex "Isolated", Digits, ByteLevel, Sequence)
//   becomes the pattern list, so Llama 3, Qwen2 and SmolLM2 files work without a preset;
// - SentencePiece-style (Metaspace pre-tokenizer or Prepend/Replace U+2581 normalizer, usually
//   with byte_fallback): merges by rank on the U+2581-escaped text.
// added_tokens become control (special) or user-defined tokens. BOS/EOS/PAD come from
// tokenizer_config.json beside the file when present, else from the TemplateProcessing
// post-processor and conventional names. Normalizers such as NFC are not applied (as llama.cpp).
// Tested in tests/data/test_tokenizer_json.cpp.
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/bpe_tokenizer.h"
#include "data/pretokenizer.h"
#include "data/spm_tokenizer.h"
#include "data/tokenizer_loaders.h"

namespace qlora {
namespace {

using nlohmann::json;

constexpr const char* kSpmSpace = "\xE2\x96\x81";

struct Layout {
  bool byte_level = false;
  bool metaspace = false;  // a Metaspace pre-tokenizer or U+2581 normalizer
  bool prepend_normalizer = false;
  SpmOptions::Prefix prefix = SpmOptions::Prefix::Never;
  bool split_words = false;
  bool add_prefix_space = false;  // ByteLevel(add_prefix_space) - not supported
  std::vector<std::string> patterns;
};

std::string type_of(const json& j) { return j.is_object() ? j.value("type", std::string()) : std::string(); }

// Quotes a literal for PCRE2.
std::string regex_literal(const std::string& s) { return "\\Q" + s + "\\E"; }

void read_pre_tokenizer(const json& pt, Layout& layout, const std::string& path) {
  const std::string type = type_of(pt);
  if (pt.is_null()) return;
  if (type == "Sequence") {
    for (const json& p : pt.at("pretokenizers")) read_pre_tokenizer(p, layout, path);
  } else if (type == "Split") {
    const json& pattern = pt.at("pattern");
    const std::string behavior = pt.value("behavior", std::string("Isolated"));
    if (behavior != "Isolated" || pt.value("invert", false)) {
      fail("tokenizer", "{}: Split pre-tokenizer with behavior {}{}; expected Isolated, not inverted", path, behavior,
           pt.value("invert", false) ? " (inverted)" : "");
    }
    if (pattern.contains("Regex")) {
      layout.patterns.push_back(pattern.at("Regex").get<std::string>());
    } else {
      layout.patterns.push_back(regex_literal(pattern.at("String").get<std::string>()));
    }
  } else if (type == "ByteLevel") {
    layout.byte_level = true;
    if (pt.value("use_regex", true)) layout.patterns.push_back(kGpt2Pattern);
    layout.add_prefix_space = pt.value("add_prefix_space", false);
  } else if (type == "Digits") {
    layout.patterns.push_back(pt.value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)");
  } else if (type == "Metaspace") {
    layout.metaspace = true;
    std::string scheme = pt.value("prepend_scheme", std::string());
    if (scheme.empty()) scheme = pt.value("add_prefix_space", true) ? "always" : "never";
    layout.prefix = scheme == "always"  ? SpmOptions::Prefix::Always
                    : scheme == "first" ? SpmOptions::Prefix::First
                                        : SpmOptions::Prefix::Never;
    layout.split_words = pt.value("split", true);
  } else {
    fail("tokenizer",
         "{}: pre-tokenizer type '{}' is not supported; expected Sequence, Split, ByteLevel, Digits or "
         "Metaspace",
         path, type);
  }
}

void read_normalizer(const json& n, Layout& layout) {
  const std::string type = type_of(n);
  if (type == "Sequence") {
    for (const json& x : n.at("normalizers")) read_normalizer(x, layout);
  } else if (type == "Prepend" && n.value("prepend", std::string()) == kSpmSpace) {
    layout.prepend_normalizer = true;
  } else if (type == "Replace" && n.value("content", std::string()) == kSpmSpace) {
    layout.metaspace = true;
  }
}

bool decoder_is_byte_level(const json& d) {
  const std::string type = type_of(d);
  if (type == "ByteLevel") return true;
  if (type == "Sequence") {
    for (const json& x : d.at("decoders")) {
      if (decoder_is_byte_level(x)) return true;
    }
  }
  return false;
}

// The token TemplateProcessing puts before a single sequence ("<|begin_of_text|>", "<s>").
std::string template_bos(const json& pp) {
  const std::string type = type_of(pp);
  if (type == "Sequence") {
    for (const json& x : pp.at("processors")) {
      std::string s = template_bos(x);
      if (!s.empty()) return s;
    }
  } else if (type == "TemplateProcessing" && pp.contains("single") && !pp.at("single").empty()) {
    const json& first = pp.at("single").at(0);
    if (first.contains("SpecialToken")) return first.at("SpecialToken").at("id").get<std::string>();
  }
  return "";
}

// tokenizer_config.json spells a token as "text" or {"content": "text", ...}.
std::string config_token(const json& cfg, const char* key) {
  if (!cfg.contains(key)) return "";
  const json& v = cfg.at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content")) return v.at("content").get<std::string>();
  return "";
}

std::pair<std::string, std::string> split_merge(const json& m, const std::string& path) {
  if (m.is_array() && m.size() == 2) return {m.at(0).get<std::string>(), m.at(1).get<std::string>()};
  if (m.is_string()) {
    const std::string s = m.get<std::string>();
    const size_t sp = s.find(' ', 1);
    if (sp != std::string::npos) return {s.substr(0, sp), s.substr(sp + 1)};
  }
  fail("tokenizer", "{}: merge {} is malformed; expected \"left right\" or [\"left\", \"right\"]", path,
       m.dump().substr(0, 80));
}

}  // namespace

std::unique_ptr<Tokenizer> load_hf_json_tokenizer(const std::string& path, std::string_view data) {
  json j;
  try {
    j = json::parse(data);
  } catch (const json::exception& e) {
    fail("tokenizer", "{}: not valid JSON ({}); expected a Hugging Face tokenizer.json", path, e.what());
  }
  try {
    if (!j.is_object() || !j.contains("model")) {
      fail("tokenizer", "{}: no \"model\" object; expected a Hugging Face tokenizer.json", path);
    }
    const json& model = j.at("model");
    const std::string model_type = model.value("type", std::string("BPE"));
    if (model_type != "BPE") {
      fail("tokenizer", "{}: model type '{}' is not supported; expected BPE", path, model_type);
    }

    // Vocabulary: model.vocab plus added_tokens; holes are filled like llama.cpp's converter.
    std::vector<VocabToken> tokens;
    // Ids must be JSON integers: nlohmann's get<int64_t>() casts a float such as 3.7e76 without a
    // range check (undefined behaviour; found by tests/fuzz fuzz_tokenizer_json).
    const auto place = [&](const json& id_j, const std::string& text, TokenType type) {
      if (!id_j.is_number_integer())
        fail("tokenizer", "{}: token '{}' has id {}; expected an integer", path, text, id_j.dump());
      const int64_t id = id_j.is_number_unsigned() && id_j.get<uint64_t>() > uint64_t(INT64_MAX) ? -1 : id_j.get<int64_t>();
      if (id < 0 || id >= (1 << 24))
        fail("tokenizer", "{}: token '{}' has id {}; expected 0..{}", path, text, id, (1 << 24) - 1);
      if (static_cast<size_t>(id) >= tokens.size()) tokens.resize(id + 1, VocabToken{"", 0.0f, TokenType::Undefined});
      tokens[id] = {text, 0.0f, type};
    };
    for (const auto& [text, id] : model.at("vocab").items()) place(id, text, TokenType::Normal);
    if (j.contains("added_tokens")) {
      for (const json& t : j.at("added_tokens")) {
        place(t.at("id"), t.at("content").get<std::string>(),
              t.value("special", false) ? TokenType::Control : TokenType::UserDefined);
      }
    }
    for (size_t id = 0; id < tokens.size(); ++id) {
      if (tokens[id].type == TokenType::Undefined)
        tokens[id] = {"[PAD" + std::to_string(id) + "]", 0.0f, TokenType::Unused};
    }

    Layout layout;
    read_pre_tokenizer(j.value("pre_tokenizer", json()), layout, path);
    read_normalizer(j.value("normalizer", json()), layout);
    if (decoder_is_byte_level(j.value("decoder", json()))) layout.byte_level = true;
    if (layout.byte_level && layout.metaspace) {
      fail("tokenizer", "{}: both ByteLevel and Metaspace; expected one of them", path);
    }
    if (!layout.byte_level && !layout.metaspace) {
      fail("tokenizer",
           "{}: neither ByteLevel nor Metaspace/U+2581 handling found; expected a byte-level or "
           "SentencePiece-style BPE tokenizer.json",
           path);
    }
    if (layout.add_prefix_space) {
      fail("tokenizer", "{}: ByteLevel add_prefix_space=true is not supported; expected false", path);
    }

    // Specials: tokenizer_config.json beside the file, then the post-processor, then names.
    json cfg;
    const auto cfg_path = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
    if (std::filesystem::exists(cfg_path)) {
      try {
        cfg = json::parse(read_tokenizer_file(cfg_path.string()));
      } catch (const json::exception& e) {
        fail("tokenizer", "{}: not valid JSON ({})", cfg_path.string(), e.what());
      }
    }
    std::unordered_map<std::string, int32_t> by_text;
    for (size_t id = 0; id < tokens.size(); ++id) by_text[tokens[id].text] = static_cast<int32_t>(id);
    const auto id_of = [&](const std::string& text) {
      const auto it = by_text.find(text);
      return text.empty() || it == by_text.end() ? -1 : it->second;
    };
    const auto first_of = [&](std::initializer_list<const char*> names) {
      for (const char* n : names) {
        if (id_of(n) >= 0) return id_of(n);
      }
      return -1;
    };
    SpecialIds ids;
    const std::string template_first = template_bos(j.value("post_processor", json()));
    ids.bos = id_of(config_token(cfg, "bos_token"));
    if (ids.bos < 0) ids.bos = id_of(template_first);
    if (ids.bos < 0) ids.bos = first_of({"<|begin_of_text|>", "<s>", "<bos>"});
    ids.eos = id_of(config_token(cfg, "eos_token"));
    if (ids.eos < 0) ids.eos = first_of({"<|end_of_text|>", "</s>", "<|endoftext|>", "<eos>", "<|im_end|>"});
    ids.pad = id_of(config_token(cfg, "pad_token"));
    ids.unk = model.contains("unk_token") && model.at("unk_token").is_string()
                  ? id_of(model.at("unk_token").get<std::string>())
                  : -1;
    ids.eot = id_of("<|eot_id|>");
    ids.eom = id_of("<|eom_id|>");
    bool add_bos = !template_first.empty() && id_of(template_first) == ids.bos;
    if (cfg.contains("add_bos_token") && cfg.at("add_bos_token").is_boolean())
      add_bos = cfg.at("add_bos_token").get<bool>();

    std::vector<std::pair<std::string, std::string>> merges;
    if (model.contains("merges")) {
      for (const json& m : model.at("merges")) merges.push_back(split_merge(m, path));
    }

    if (layout.byte_level) {
      BpeOptions options;
      options.add_bos = add_bos;
      options.ignore_merges = model.value("ignore_merges", false);
      options.pre_patterns = std::move(layout.patterns);
      options.merges = std::move(merges);
      return std::make_unique<BpeTokenizer>(Vocab(std::move(tokens), ids, path), std::move(options));
    }

    // SentencePiece-style: "<0xNN>" pieces are byte tokens when byte_fallback is on.
    if (model.value("byte_fallback", false)) {
      for (VocabToken& t : tokens) {
        if (t.type == TokenType::Normal && byte_piece_value(t.text) >= 0) {
          t.type = TokenType::Byte;
        }
      }
    }
    SpmOptions options;
    options.add_bos = add_bos;
    if (layout.prepend_normalizer) {
      options.space_prefix = SpmOptions::Prefix::Always;  // Prepend runs on every normalized run
    } else {
      options.space_prefix = layout.prefix;
      options.prefix_only_without_space = true;  // Metaspace skips text that starts with U+2581
      options.split_words = layout.split_words;
    }
    for (const auto& [a, b] : merges) {
      const int32_t ia = id_of(a), ib = id_of(b);
      if (ia >= 0 && ib >= 0) options.merges.emplace_back(ia, ib);
    }
    if (options.merges.empty()) {
      fail("tokenizer", "{}: SentencePiece-style tokenizer.json without merges; expected model.merges", path);
    }
    return std::make_unique<SpmTokenizer>(Vocab(std::move(tokens), ids, path), std::move(options));
  } catch (const json::exception& e) {
    fail("tokenizer", "{}: unexpected tokenizer.json structure ({})", path, e.what());
  }
}

}  // namespace qlora
