// Helpers for the tokenizer tests: a scratch folder removed at scope exit, file writing, and
// tokenizer.json documents built from the GGUF vocabularies in ../shared (so no large fixture is
// committed).
#pragma once
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/gguf.h"

namespace qlora::test {

class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name)
      : path_(std::filesystem::temp_directory_path() / (name + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

inline void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

inline std::vector<std::string> gguf_strings(const GgufFile& f, const std::string& key) {
  std::vector<std::string> out;
  for (const auto& v : f.get(key).as_array(key)) out.push_back(v.as_string(key));
  return out;
}

// A byte-level tokenizer.json with the GGUF's vocabulary and merges; its last token is added as
// a special token. `pre_tokenizer` and `normalizer` as Hugging Face serializes them.
inline nlohmann::json byte_level_json(const GgufFile& f, const nlohmann::json& pre_tokenizer,
                                      const nlohmann::json& normalizer, bool ignore_merges, bool pair_merges) {
  using nlohmann::json;
  const auto tokens = gguf_strings(f, "tokenizer.ggml.tokens");
  json vocab = json::object();
  for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = i;
  json merges = json::array();
  for (const auto& m : gguf_strings(f, "tokenizer.ggml.merges")) {
    if (pair_merges) {
      const size_t sp = m.find(' ', 1);
      merges.push_back(json::array({m.substr(0, sp), m.substr(sp + 1)}));
    } else {
      merges.push_back(m);
    }
  }
  return json{
      {"version", "1.0"},
      {"added_tokens", json::array({json{{"id", tokens.size() - 1}, {"content", tokens.back()}, {"special", true}}})},
      {"normalizer", normalizer},
      {"pre_tokenizer", pre_tokenizer},
      {"post_processor", nullptr},
      {"decoder", json{{"type", "ByteLevel"}}},
      {"model", json{{"type", "BPE"}, {"ignore_merges", ignore_merges}, {"vocab", vocab}, {"merges", merges}}},
  };
}

// A metadata-only GGUF v3 file (ggml docs/gguf.md): strings, bools, u32, and arrays of strings,
// f32 or i32 -- what tokenizer metadata needs.
class GgufWriter {
 public:
  void add(const std::string& key, const std::string& v) {
    kv(key, 8);
    str(v);
  }
  void add(const std::string& key, const char* v) { add(key, std::string(v)); }
  void add(const std::string& key, bool v) {
    kv(key, 7);
    body_ += static_cast<char>(v);
  }
  void add(const std::string& key, uint32_t v) {
    kv(key, 4);
    pod(v);
  }
  void add(const std::string& key, const std::vector<std::string>& v) {
    kv(key, 9);
    pod(uint32_t{8});
    pod(uint64_t{v.size()});
    for (const auto& s : v) str(s);
  }
  void add(const std::string& key, const std::vector<float>& v) { array(key, 6, v); }
  void add(const std::string& key, const std::vector<int32_t>& v) { array(key, 5, v); }
  void write(const std::string& path) const {
    std::string head = "GGUF";
    const uint32_t version = 3;
    const uint64_t n_tensors = 0;
    head.append(reinterpret_cast<const char*>(&version), 4);
    head.append(reinterpret_cast<const char*>(&n_tensors), 8);
    head.append(reinterpret_cast<const char*>(&n_kv_), 8);
    write_file(path, head + body_);
  }

 private:
  template <typename T>
  void pod(T v) {
    body_.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void str(const std::string& s) {
    pod(uint64_t{s.size()});
    body_ += s;
  }
  void kv(const std::string& key, uint32_t type) {
    str(key);
    pod(type);
    ++n_kv_;
  }
  template <typename T>
  void array(const std::string& key, uint32_t type, const std::vector<T>& v) {
    kv(key, 9);
    pod(type);
    pod(uint64_t{v.size()});
    for (T x : v) pod(x);
  }
  std::string body_;
  uint64_t n_kv_ = 0;
};

inline size_t utf8_chars(const std::string& s) {
  return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

// A SentencePiece-style tokenizer.json (by default the Llama 2 layout: Prepend/Replace U+2581
// normalizer, byte_fallback, merges, BOS template) from a GGUF "llama" vocabulary. Merges as transformers'
// SentencePieceExtractor derives them: every split of a piece into two pieces, ordered by the
// merged piece's score, then by the lengths of the parts, all descending.
inline nlohmann::json sentencepiece_json(const GgufFile& f, const nlohmann::json* normalizer = nullptr,
                                         const nlohmann::json* pre_tokenizer = nullptr) {
  using nlohmann::json;
  const auto tokens = gguf_strings(f, "tokenizer.ggml.tokens");
  std::vector<double> scores;
  std::vector<int64_t> types;
  for (const auto& v : f.get("tokenizer.ggml.scores").as_array("s")) scores.push_back(v.as_float("s"));
  for (const auto& v : f.get("tokenizer.ggml.token_type").as_array("t")) types.push_back(v.as_int("t"));
  std::unordered_map<std::string, size_t> id;
  json vocab = json::object();
  for (size_t i = 0; i < tokens.size(); ++i) {
    vocab[tokens[i]] = i;
    if (types[i] == 1) id[tokens[i]] = i;
  }
  struct Merge {
    std::string a, b;
    double score;
    size_t la, lb;
  };
  std::vector<Merge> merges;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (types[i] != 1) continue;
    const std::string& t = tokens[i];
    for (size_t k = 1; k < t.size(); ++k) {
      if ((t[k] & 0xC0) == 0x80) continue;  // split between characters only
      const std::string a = t.substr(0, k), b = t.substr(k);
      if (id.count(a) && id.count(b)) merges.push_back({a, b, scores[i], utf8_chars(a), utf8_chars(b)});
    }
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& x, const Merge& y) {
    if (x.score != y.score) return x.score > y.score;
    if (x.la != y.la) return x.la > y.la;
    return x.lb > y.lb;
  });
  json jm = json::array();
  for (const auto& m : merges) jm.push_back(m.a + " " + m.b);
  json added = json::array();
  for (size_t i = 0; i < 3; ++i) added.push_back(json{{"id", i}, {"content", tokens[i]}, {"special", true}});
  const std::string space = "\xE2\x96\x81";
  json doc{
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer",
       json{{"type", "Sequence"},
            {"normalizers",
             json::array({json{{"type", "Prepend"}, {"prepend", space}},
                          json{{"type", "Replace"}, {"pattern", json{{"String", " "}}}, {"content", space}}})}}},
      {"pre_tokenizer", nullptr},
      {"post_processor", json{{"type", "TemplateProcessing"},
                              {"single", json::array({json{{"SpecialToken", json{{"id", "<s>"}, {"type_id", 0}}}},
                                                      json{{"Sequence", json{{"id", "A"}, {"type_id", 0}}}}})}}},
      {"decoder", nullptr},
      {"model",
       json{{"type", "BPE"}, {"byte_fallback", true}, {"unk_token", "<unk>"}, {"vocab", vocab}, {"merges", jm}}},
  };
  if (normalizer) doc["normalizer"] = *normalizer;
  if (pre_tokenizer) doc["pre_tokenizer"] = *pre_tokenizer;
  return doc;
}

}  // namespace qlora::test
