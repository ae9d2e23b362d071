// `qlora tokenize MODEL_OR_TOKENIZER (--text T | --file F) [--no-bos] [--json]`: the token ids of
// a text, with their pieces, or (--json) a JSON array of ids. Accepts a model folder or file, a
// tokenizer file, or a tokenizer-only GGUF (load_tokenizer).
#include <fmt/core.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "data/tokenizer.h"

namespace qlora::cli {

namespace {

struct TokenizeOptions {
  std::string path;
  std::string text;
  std::string file;
  bool no_bos = false;
  bool parse_special = false;
  bool json = false;
};

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("tokenize", "cannot read {}", path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Length of the valid UTF-8 sequence at s[i], 0 when invalid or cut off (a byte-level token
// may hold part of a character).
size_t utf8_len(const std::string& s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
  return n;
}

// The piece in quotes, JSON-escaped, with bytes outside valid UTF-8 as \xNN.
std::string printable(const std::string& s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_len(s, i);
    if (n == 0) {
      out += fmt::format("\\x{:02X}", static_cast<unsigned char>(s[i]));
      ++i;
      continue;
    }
    const std::string ch = s.substr(i, n);
    const std::string quoted = nlohmann::json(ch).dump();
    out += quoted.substr(1, quoted.size() - 2);
    i += n;
  }
  return out + "\"";
}

}  // namespace

void register_tokenize(CLI::App& app) {
  auto o = std::make_shared<TokenizeOptions>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids (and pieces) of a text");
  cmd->add_option("MODEL_OR_TOKENIZER", o->path,
                  "model folder or file, tokenizer.json / tokenizer.model / tokenizer .bin, or a (tokenizer-only) GGUF")
      ->required();
  auto* text = cmd->add_option("--text", o->text, "the text to tokenize");
  auto* file = cmd->add_option("--file", o->file, "a file whose contents to tokenize");
  text->excludes(file);
  file->excludes(text);
  cmd->add_flag("--no-bos", o->no_bos, "do not prepend BOS");
  cmd->add_flag("--parse-special", o->parse_special,
                "special tokens written in the text (\"<s>\", \"<|im_end|>\") become control tokens; default: text");
  cmd->add_flag("--json", o->json, "print a JSON array of ids");
  cmd->callback([o, text, file] {
    if (text->count() == 0 && file->count() == 0) fail("tokenize", "give the text with --text or --file");
    const std::string input = file->count() ? read_text_file(o->file) : o->text;
    const auto tokenizer = load_tokenizer(o->path);
    const std::vector<int32_t> ids = tokenizer->encode(input, !o->no_bos && tokenizer->adds_bos(), o->parse_special);
    if (o->json) {
      fmt::print("{}\n", nlohmann::json(ids).dump());
      return;
    }
    for (size_t i = 0; i < ids.size(); ++i) {
      const int32_t prev = i == 0 ? -1 : ids[i - 1];
      fmt::print("{:>8} {}\n", ids[i], printable(tokenizer->decode_token(ids[i], prev)));
    }
    fmt::print("{} tokens, {} bytes\n", ids.size(), input.size());
  });
}

}  // namespace qlora::cli
