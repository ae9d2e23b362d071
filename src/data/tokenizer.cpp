// Tokenizer file dispatch (load_tokenizer), the model -> tokenizer search
// (find_tokenizer_for_model) and Tokenizer::decode. The formats themselves live in
// tokenizer_<format>.cpp. Tested in tests/data/test_tokenizer_files.cpp.
#include "data/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "data/tokenizer_loaders.h"
#include "io/gguf.h"

namespace qlora {
namespace fs = std::filesystem;

namespace {

constexpr const char* kFormats =
    "a tokenizer.json, tokenizer.model (SentencePiece or tiktoken), llama2.c tokenizer .bin or .gguf";

std::string lower_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext;
}

bool gguf_has_vocab(const std::string& path) {
  const GgufFile f = GgufFile::open(path);
  return f.has("tokenizer.ggml.model") && f.has("tokenizer.ggml.tokens");
}

// Candidate tokenizer files in a folder, best first. `exclude` is the model file itself.
std::vector<fs::path> candidates_in(const fs::path& dir, bool llama2c_first, const fs::path& exclude) {
  std::vector<fs::path> llama2c;
  if (fs::exists(dir / "tokenizer.bin")) llama2c.push_back(dir / "tokenizer.bin");
  std::vector<fs::path> tok_bins;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && name.starts_with("tok") && lower_extension(entry.path()) == ".bin" &&
        name != "tokenizer.bin" && entry.path() != exclude) {
      tok_bins.push_back(entry.path());
    }
  }
  std::sort(tok_bins.begin(), tok_bins.end());
  llama2c.insert(llama2c.end(), tok_bins.begin(), tok_bins.end());

  std::vector<fs::path> hf = {dir / "tokenizer.json", dir / "tokenizer.model"};
  std::vector<fs::path> out = llama2c_first ? llama2c : hf;
  const auto& rest = llama2c_first ? hf : llama2c;
  out.insert(out.end(), rest.begin(), rest.end());
  return out;
}

// Tries the candidates in order; returns the first that loads. A file that exists but fails to
// load does not stop the search, its error is reported if nothing else loads.
std::unique_ptr<Tokenizer> load_first(const std::vector<fs::path>& candidates, std::vector<std::string>& looked) {
  std::vector<std::string> errors;
  for (const fs::path& p : candidates) {
    if (!fs::exists(p)) {
      looked.push_back(p.string());
      continue;
    }
    try {
      return load_tokenizer(p.string());
    } catch (const Error& e) {
      looked.push_back(p.string() + " (" + e.what() + ")");
    }
  }
  return nullptr;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

}  // namespace

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (skip_special && is_control(ids[i])) continue;
    out += decode_token(ids[i], i > 0 ? ids[i - 1] : -1);
  }
  return out;
}

std::string read_tokenizer_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("tokenizer", "cannot open {}: {}; expected {}", path, std::strerror(errno), kFormats);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail("tokenizer", "cannot read {}: {}", path, std::strerror(errno));
  return data;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  const fs::path p(path);
  if (!fs::exists(p)) fail("tokenizer", "{}: no such file; expected {}", path, kFormats);
  if (fs::is_directory(p)) return find_tokenizer_for_model(path);

  const std::string ext = lower_extension(p);
  std::string head(4, '\0');
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("tokenizer", "cannot open {}: {}; expected {}", path, std::strerror(errno), kFormats);
    in.read(head.data(), 4);
    head.resize(static_cast<size_t>(in.gcount()));
  }
  if (head == "GGUF" || ext == ".gguf") return load_gguf_tokenizer(path);

  const std::string data = read_tokenizer_file(path);
  if (data.empty()) fail("tokenizer", "{}: empty file; expected {}", path, kFormats);
  const size_t first = data.find_first_not_of(" \t\r\n");
  if (ext == ".json" || (first != std::string::npos && data[first] == '{')) return load_hf_json_tokenizer(path, data);
  if (ext == ".bin") return load_llama2c_tokenizer(path, data);
  if (data[0] == 0x0A) return load_sentencepiece_tokenizer(path, data);  // field 1 (pieces), length-delimited
  if (looks_like_tiktoken(data)) return load_tiktoken_tokenizer(path, data);
  fail("tokenizer", "{}: unknown tokenizer format (first byte 0x{:02x}); expected {}", path,
       static_cast<uint8_t>(data[0]), kFormats);
}

std::unique_ptr<Tokenizer> find_tokenizer_for_model(const std::string& model_path) {
  const fs::path p(model_path);
  if (!fs::exists(p))
    fail("tokenizer", "model path {}: no such file or folder; expected a model file or folder", model_path);
  std::vector<std::string> looked;
  std::vector<fs::path> candidates;
  if (fs::is_directory(p)) {
    candidates = candidates_in(p, false, {});
  } else {
    const std::string ext = lower_extension(p);
    if (ext == ".gguf") {
      if (gguf_has_vocab(model_path)) return load_gguf_tokenizer(model_path);
      looked.push_back(model_path + " (no tokenizer.ggml.* metadata)");
    }
    const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
    candidates = candidates_in(dir, ext == ".bin", p);
  }
  if (auto tok = load_first(candidates, looked)) return tok;
  fail("tokenizer", "no tokenizer found for model {}; looked at: {}; expected one of them to exist and load",
       model_path, join(looked));
}

}  // namespace qlora
