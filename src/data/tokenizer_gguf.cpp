// Tokenizer from GGUF metadata (ggml docs/gguf.md "tokenizer.ggml.*"), read as llama.cpp's
// llama_vocab::load does: model "llama" -> SPM (scores, token types, add_space_prefix), model
// "gpt2" -> byte-level BPE (merges "a b", tokenizer.ggml.pre picks the pre-tokenizer).
// Tested in tests/data/test_tokenizer_spm.cpp and test_tokenizer_bpe.cpp (llama.cpp vocab GGUFs).
#include "core/error.h"
#include "data/bpe_tokenizer.h"
#include "data/spm_tokenizer.h"
#include "data/tokenizer_loaders.h"
#include "io/gguf.h"

namespace qlora {
namespace {

struct PreTokenizer {
  std::vector<std::string> patterns;
  bool ignore_merges = false;
  bool add_bos = false;
};

// llama.cpp's tokenizer.ggml.pre names (llama-vocab.cpp) grouped by the pattern they select.
bool pre_for(const std::string& pre, PreTokenizer& out) {
  const auto in = [&](std::initializer_list<const char*> names) {
    for (const char* n : names) {
      if (pre == n) return true;
    }
    return false;
  };
  if (in({"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"})) {
    out = {Pretokenizer::preset("llama3"), true, true};
  } else if (in({"dbrx", "smaug-bpe"})) {
    out = {Pretokenizer::preset("llama3"), false, false};
  } else if (in({"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
                 "jina-v1-en", "jina-v2-code", "roberta-bpe", "mpt", "olmo", "jais", "trillion", "granite-docling",
                 "exaone4"})) {
    out = {Pretokenizer::preset("gpt2"), false, false};
  } else if (in({"qwen2", "deepseek-r1-qwen", "kormo", "megrez", "stablelm2", "hunyuan"})) {
    out = {Pretokenizer::preset("qwen2"), false, false};
  } else if (in({"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"})) {
    out = {Pretokenizer::preset("smollm"), false, false};
  } else if (pre.empty() || pre == "default") {
    out = {Pretokenizer::preset("default"), false, false};
  } else {
    return false;
  }
  return true;
}

std::vector<std::string> string_array(const GgufFile& f, const std::string& key) {
  const GgufArray& a = f.get(key).as_array(key);
  std::vector<std::string> out;
  out.reserve(a.size());
  for (const GgufValue& v : a) out.push_back(v.as_string(key));
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& path) {
  const GgufFile f = GgufFile::open(path);
  if (!f.has("tokenizer.ggml.model") || !f.has("tokenizer.ggml.tokens")) {
    fail("tokenizer", "{}: GGUF has no tokenizer; expected tokenizer.ggml.model and tokenizer.ggml.tokens", path);
  }
  const std::string model = f.get("tokenizer.ggml.model").as_string("tokenizer.ggml.model");
  const std::vector<std::string> texts = string_array(f, "tokenizer.ggml.tokens");
  const size_t n = texts.size();

  std::vector<VocabToken> tokens(n);
  for (size_t i = 0; i < n; ++i) tokens[i].text = texts[i];
  if (f.has("tokenizer.ggml.scores")) {
    const GgufArray& scores = f.get("tokenizer.ggml.scores").as_array("tokenizer.ggml.scores");
    if (scores.size() != n) {
      fail("tokenizer", "{}: tokenizer.ggml.scores has {} entries; expected {} (one per token)", path, scores.size(),
           n);
    }
    for (size_t i = 0; i < n; ++i) tokens[i].score = static_cast<float>(scores[i].as_float("tokenizer.ggml.scores"));
  }
  if (f.has("tokenizer.ggml.token_type")) {
    const GgufArray& types = f.get("tokenizer.ggml.token_type").as_array("tokenizer.ggml.token_type");
    if (types.size() != n) {
      fail("tokenizer", "{}: tokenizer.ggml.token_type has {} entries; expected {} (one per token)", path, types.size(),
           n);
    }
    for (size_t i = 0; i < n; ++i) {
      const int64_t t = types[i].as_int("tokenizer.ggml.token_type");
      tokens[i].type = t >= 1 && t <= 6 ? static_cast<TokenType>(t) : TokenType::Undefined;
    }
  }

  // A special id from the file, or the format's default; either must name a token (a tiny vocab
  // without the keys would otherwise index past its end).
  const auto get_id = [&](const char* key, int32_t fallback) {
    const bool given = f.has(key);
    const int64_t id = given ? f.get(key).as_int(key) : fallback;
    if (!given && id < 0) return fallback;
    if (id < 0 || id >= static_cast<int64_t>(n)) {
      if (given) fail("tokenizer", "{}: {} = {}; expected 0..{}", path, key, id, n - 1);
      fail("tokenizer", "{}: {} is not set and its default {} is past the vocabulary's {} tokens", path, key, id, n);
    }
    return static_cast<int32_t>(id);
  };
  const auto get_bool = [&](const char* key, bool fallback) { return f.has(key) ? f.get(key).as_bool(key) : fallback; };

  SpecialIds ids;
  if (model == "llama") {
    ids = {get_id("tokenizer.ggml.bos_token_id", 1),     get_id("tokenizer.ggml.eos_token_id", 2),
           get_id("tokenizer.ggml.unknown_token_id", 0), get_id("tokenizer.ggml.padding_token_id", -1),
           get_id("tokenizer.ggml.eot_token_id", -1),    get_id("tokenizer.ggml.eom_token_id", -1)};
    if (!f.has("tokenizer.ggml.token_type")) {  // old files: infer what byte fallback and decode need
      for (VocabToken& t : tokens) {
        if (byte_piece_value(t.text) >= 0) t.type = TokenType::Byte;
      }
      for (int32_t id : {ids.bos, ids.eos}) {
        if (id >= 0) tokens[id].type = TokenType::Control;
      }
      if (ids.unk >= 0) tokens[ids.unk].type = TokenType::Unknown;
    }
    SpmOptions options;
    options.add_bos = get_bool("tokenizer.ggml.add_bos_token", true);
    options.space_prefix =
        get_bool("tokenizer.ggml.add_space_prefix", true) ? SpmOptions::Prefix::Always : SpmOptions::Prefix::Never;
    return std::make_unique<SpmTokenizer>(Vocab(std::move(tokens), ids, path), std::move(options));
  }
  if (model == "gpt2") {
    const std::string pre =
        f.has("tokenizer.ggml.pre") ? f.get("tokenizer.ggml.pre").as_string("tokenizer.ggml.pre") : "";
    PreTokenizer p;
    if (!pre_for(pre, p)) {
      fail("tokenizer",
           "{}: tokenizer.ggml.pre '{}' is not supported; expected a llama3, gpt-2, qwen2, smollm or "
           "default family name (see llama.cpp llama-vocab.cpp)",
           path, pre);
    }
    if (!f.has("tokenizer.ggml.merges"))
      fail("tokenizer", "{}: GGUF gpt2 tokenizer has no tokenizer.ggml.merges", path);
    BpeOptions options;
    for (const std::string& m : string_array(f, "tokenizer.ggml.merges")) {
      const size_t sp = m.find(' ', 1);  // a merge may start with a space character (llama.cpp)
      if (sp == std::string::npos) fail("tokenizer", "{}: merge '{}' has no space; expected 'left right'", path, m);
      options.merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
    }
    ids = {get_id("tokenizer.ggml.bos_token_id", -1),     get_id("tokenizer.ggml.eos_token_id", -1),
           get_id("tokenizer.ggml.unknown_token_id", -1), get_id("tokenizer.ggml.padding_token_id", -1),
           get_id("tokenizer.ggml.eot_token_id", -1),     get_id("tokenizer.ggml.eom_token_id", -1)};
    options.pre_patterns = std::move(p.patterns);
    options.ignore_merges = p.ignore_merges;
    options.add_bos = get_bool("tokenizer.ggml.add_bos_token", p.add_bos);
    return std::make_unique<BpeTokenizer>(Vocab(std::move(tokens), ids, path), std::move(options));
  }
  fail("tokenizer",
       "{}: tokenizer.ggml.model '{}' is not supported; expected 'llama' (SentencePiece BPE) or 'gpt2' "
       "(byte-level BPE)",
       path, model);
}

}  // namespace qlora
