// tiktoken ranks reader ("<base64 token bytes> <rank>" per line; tiktoken load.py
// load_tiktoken_bpe), as Meta ships Llama 3's tokenizer.model. A rank is the token id and the merge
// priority. The file has no special tokens: a 128000-rank file is taken as Llama 3's and gets its
// 256 special tokens at ids 128000..128255, named as meta-llama/llama-models
// models/llama3/tokenizer.py names them, with Llama 3's pre-tokenizer pattern.
// Tested in tests/data/test_tokenizer_bpe.cpp against llama.cpp's llama-bpe vectors.
#include <charconv>

#include "core/error.h"
#include "data/bpe_tokenizer.h"
#include "data/byte_level.h"
#include "data/tokenizer_loaders.h"

namespace qlora {
namespace {

constexpr int32_t kLlama3Ranks = 128000;
constexpr int32_t kLlama3Specials = 256;

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

bool base64_decode(std::string_view in, std::string& out) {
  uint32_t acc = 0;
  int bits = 0;
  size_t i = 0;
  for (; i < in.size() && in[i] != '='; ++i) {
    const int v = base64_value(in[i]);
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  for (; i < in.size(); ++i) {
    if (in[i] != '=') return false;
  }
  return !out.empty();
}

std::vector<std::string> llama3_special_tokens() {
  std::vector<std::string> s = {
      "<|begin_of_text|>",
      "<|end_of_text|>",
      "<|reserved_special_token_0|>",
      "<|reserved_special_token_1|>",
      "<|finetune_right_pad_id|>",
      "<|step_id|>",
      "<|start_header_id|>",
      "<|end_header_id|>",
      "<|eom_id|>",
      "<|eot_id|>",
      "<|python_tag|>",
      "<|image|>",
  };
  for (int i = 2; s.size() < kLlama3Specials; ++i) s.push_back("<|reserved_special_token_" + std::to_string(i) + "|>");
  return s;
}

}  // namespace

bool looks_like_tiktoken(std::string_view data) {
  const size_t eol = data.find('\n');
  const std::string_view line = data.substr(0, eol);
  const size_t sp = line.find(' ');
  if (sp == 0 || sp == std::string_view::npos || sp + 1 >= line.size()) return false;
  for (char c : line.substr(0, sp)) {
    if (base64_value(c) < 0 && c != '=') return false;
  }
  for (char c : line.substr(sp + 1)) {
    if ((c < '0' || c > '9') && c != '\r') return false;
  }
  return true;
}

std::unique_ptr<Tokenizer> load_tiktoken_tokenizer(const std::string& path, std::string_view data) {
  std::vector<VocabToken> tokens;
  std::vector<bool> seen;
  size_t line_no = 0;
  for (size_t pos = 0; pos < data.size();) {
    size_t eol = data.find('\n', pos);
    if (eol == std::string_view::npos) eol = data.size();
    std::string_view line = data.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const size_t sp = line.find(' ');
    std::string bytes;
    int64_t rank = -1;
    const std::string_view rank_text = sp == std::string_view::npos ? std::string_view() : line.substr(sp + 1);
    const auto [end, ec] = std::from_chars(rank_text.data(), rank_text.data() + rank_text.size(), rank);
    if (sp == std::string_view::npos || !base64_decode(line.substr(0, sp), bytes) || ec != std::errc() ||
        end != rank_text.data() + rank_text.size() || rank < 0 || rank >= (1 << 24)) {
      fail("tokenizer", "{}: line {} is not a tiktoken rank; expected '<base64> <rank>', got '{}'", path, line_no,
           std::string(line.substr(0, 80)));
    }
    if (static_cast<size_t>(rank) >= tokens.size()) {
      tokens.resize(rank + 1);
      seen.resize(rank + 1);
    }
    if (seen[rank]) fail("tokenizer", "{}: line {}: rank {} appears twice; expected unique ranks", path, line_no, rank);
    seen[rank] = true;
    tokens[rank].text = byte_level_encode(bytes);
  }
  if (tokens.empty()) fail("tokenizer", "{}: empty tiktoken file; expected '<base64> <rank>' lines", path);
  for (size_t id = 0; id < seen.size(); ++id) {
    if (!seen[id])
      fail("tokenizer", "{}: rank {} missing; expected ranks 0..{} without gaps", path, id, seen.size() - 1);
  }

  SpecialIds ids;
  BpeOptions options;
  options.merges_from_ranks = true;
  options.ignore_merges = true;  // tiktoken looks a whole word up before merging
  options.pre_patterns = {kLlama3Pattern};
  if (static_cast<int32_t>(tokens.size()) == kLlama3Ranks) {
    for (const std::string& text : llama3_special_tokens()) tokens.push_back({text, 0.0f, TokenType::Control});
    ids.bos = kLlama3Ranks + 0;  // <|begin_of_text|>
    ids.eos = kLlama3Ranks + 1;  // <|end_of_text|>
    ids.pad = kLlama3Ranks + 4;  // <|finetune_right_pad_id|>
    ids.eom = kLlama3Ranks + 8;  // <|eom_id|>
    ids.eot = kLlama3Ranks + 9;  // <|eot_id|>
    options.add_bos = true;
  }
  return std::make_unique<BpeTokenizer>(Vocab(std::move(tokens), ids, path), std::move(options));
}

}  // namespace qlora
