// llama2.c tokenizer.bin reader (karpathy/llama2.c tokenizer.py export / run.c build_tokenizer):
// int32 max_token_length, then per token float32 score, int32 byte length, the bytes. The vocab
// size is not stored: tokens run to the end of the file. Pieces use real spaces, and BOS/EOS are
// spelled "\n<s>\n" / "\n</s>\n"; both are normalized to the SentencePiece/GGUF spelling (U+2581,
// "<s>") so the same SPM tokenizer runs on them. Tested in tests/data/test_tokenizer_spm.cpp.
#include <cstring>

#include "core/error.h"
#include "data/spm_tokenizer.h"
#include "data/tokenizer_loaders.h"

namespace qlora {
namespace {

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \n") - b + 1);
}

}  // namespace

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path, std::string_view data) {
  const auto read_i32 = [&](size_t at) {
    int32_t v;
    std::memcpy(&v, data.data() + at, 4);
    return v;
  };
  if (data.size() < 4) {
    fail("tokenizer", "{}: llama2.c tokenizer too short; expected at least a 4-byte header, got {} bytes", path,
         data.size());
  }
  const int32_t max_len = read_i32(0);
  if (max_len <= 0 || max_len > (1 << 16)) {
    fail("tokenizer", "{}: not a llama2.c tokenizer; expected max_token_length in 1..65536, got {}", path, max_len);
  }
  std::vector<VocabToken> tokens;
  size_t pos = 4;
  while (pos < data.size()) {
    if (data.size() - pos < 8) {
      fail("tokenizer", "{}: llama2.c tokenizer truncated in token {}; expected 8 header bytes at offset {}, got {}",
           path, tokens.size(), pos, data.size() - pos);
    }
    VocabToken t;
    std::memcpy(&t.score, data.data() + pos, 4);
    const int32_t len = read_i32(pos + 4);
    pos += 8;
    if (len < 0 || static_cast<size_t>(len) > data.size() - pos) {
      fail("tokenizer", "{}: llama2.c tokenizer token {} has length {}; expected 0..{}", path, tokens.size(), len,
           data.size() - pos);
    }
    t.text.assign(data.data() + pos, len);
    pos += len;
    tokens.push_back(std::move(t));
  }
  if (tokens.size() < 3) {
    fail("tokenizer", "{}: llama2.c tokenizer has {} tokens; expected at least 3 (<unk>, <s>, </s>)", path,
         tokens.size());
  }
  // Ids 0/1/2 are <unk>/<s>/</s> by the llama2.c convention (run.c encodes BOS as 1, EOS as 2).
  for (size_t id = 0; id < tokens.size(); ++id) {
    VocabToken& t = tokens[id];
    if (id < 3) {
      t.text = trim(t.text);
      t.type = id == 0 ? TokenType::Unknown : TokenType::Control;
    } else if (0 <= byte_piece_value(t.text)) {
      t.type = TokenType::Byte;
    } else {
      std::string spelled;
      for (char c : t.text) spelled += c == ' ' ? std::string("\xE2\x96\x81") : std::string(1, c);
      t.text = std::move(spelled);
    }
  }
  SpecialIds ids;
  ids.unk = 0;
  ids.bos = 1;
  ids.eos = 2;
  return std::make_unique<SpmTokenizer>(Vocab(std::move(tokens), ids, path), SpmOptions{});
}

}  // namespace qlora
