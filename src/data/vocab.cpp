// Vocabulary index, special ids and special-token matching; see vocab.h.
#include "data/vocab.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace qlora {
namespace {

// Token texts that end generation (llama.cpp llama-vocab.cpp, special_eog_ids).
constexpr const char* kEogTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>",         "<end_of_turn>",      "<|endoftext|>", "<|eom_id|>",
    "<EOT>",      "_<EOT>",     "<|end_of_text|>", "<end_of_utterance>", "<|return|>",    "<|call|>",
};

}  // namespace

int byte_piece_value(std::string_view text) {
  const auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  if (text.size() != 6 || !text.starts_with("<0x") || text[5] != '>') return -1;
  const int hi = hex(text[3]), lo = hex(text[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

Vocab::Vocab(std::vector<VocabToken> tokens, SpecialIds ids, const std::string& source)
    : tokens_(std::move(tokens)), ids_(ids) {
  if (tokens_.empty()) fail("tokenizer", "{}: empty vocabulary; expected at least one token", source);
  const auto n = static_cast<int32_t>(tokens_.size());
  for (auto [name, id] : {std::pair{"bos", ids_.bos},
                          {"eos", ids_.eos},
                          {"unk", ids_.unk},
                          {"pad", ids_.pad},
                          {"eot", ids_.eot},
                          {"eom", ids_.eom}}) {
    if (id < -1 || id >= n) {
      fail("tokenizer", "{}: {} token id {} out of range; expected 0..{}", source, name, id, n - 1);
    }
  }
  for (int32_t id = 0; id < n; ++id) {
    const VocabToken& t = tokens_[size_t(id)];
    if (t.type == TokenType::Byte && byte_piece_value(t.text) < 0)
      fail("tokenizer", "{}: token {} '{}' is a byte token but not <0xNN> with two hex digits", source, id, t.text);
  }
  index_.reserve(tokens_.size());
  for (int32_t id = 0; id < n; ++id) index_[tokens_[id].text] = id;

  for (int32_t id : {ids_.eos, ids_.eot, ids_.eom}) {
    if (id >= 0) eog_.insert(id);
  }
  for (const char* text : kEogTexts) {
    const int32_t id = find(text);
    if (id < 0) continue;
    eog_.insert(id);
    tokens_[id].type = TokenType::Control;  // as llama.cpp: an EOG token is always a control token
  }

  specials_by_byte_.resize(256);
  for (int32_t id = 0; id < n; ++id) {
    if (is_special(id) && !tokens_[id].text.empty()) {
      specials_by_byte_[static_cast<uint8_t>(tokens_[id].text[0])].push_back(id);
    }
  }
  for (auto& list : specials_by_byte_) {
    std::stable_sort(list.begin(), list.end(),
                     [&](int32_t a, int32_t b) { return tokens_[a].text.size() > tokens_[b].text.size(); });
  }
}

const VocabToken& Vocab::token(int32_t id) const {
  if (id < 0 || id >= size()) {
    fail("tokenizer", "token id {} out of range; expected 0..{}", id, size() - 1);
  }
  return tokens_[id];
}

int32_t Vocab::find(std::string_view text) const {
  const auto it = index_.find(text);
  return it == index_.end() ? -1 : it->second;
}

bool Vocab::is_special(int32_t id) const {
  if (id < 0 || id >= size()) return false;
  const TokenType t = tokens_[id].type;
  return t == TokenType::Control || t == TokenType::UserDefined || t == TokenType::Unknown;
}

bool Vocab::is_control(int32_t id) const {
  if (id < 0 || id >= size()) return false;
  return tokens_[id].type == TokenType::Control || tokens_[id].type == TokenType::Unknown;
}

std::vector<TextFragment> Vocab::split_special(std::string_view text, bool parse_special,
                                               const std::vector<TextSpan>* plain) const {
  std::vector<TextFragment> out;
  size_t run = 0;  // start of the pending plain-text run
  size_t pos = 0;
  size_t next_plain = 0;  // the first plain span that does not end at or before pos
  while (pos < text.size()) {
    int32_t hit = -1;
    while (plain && next_plain < plain->size() && (*plain)[next_plain].end <= pos) ++next_plain;
    // A control token may not overlap the plain span at or after pos; added (user-defined)
    // tokens match anywhere, as they do without parse_special.
    const size_t plain_begin = plain && next_plain < plain->size() ? (*plain)[next_plain].begin : text.size();
    for (int32_t id : specials_by_byte_[static_cast<uint8_t>(text[pos])]) {
      const VocabToken& t = tokens_[id];
      if (!parse_special && t.type != TokenType::UserDefined) continue;
      if (t.type != TokenType::UserDefined && pos + t.text.size() > plain_begin) continue;
      if (t.text.size() <= text.size() - pos && std::memcmp(text.data() + pos, t.text.data(), t.text.size()) == 0) {
        hit = id;
        break;  // the list is longest first
      }
    }
    if (hit < 0) {
      ++pos;
      continue;
    }
    if (pos > run) out.push_back({text.substr(run, pos - run), -1});
    out.push_back({text.substr(pos, tokens_[hit].text.size()), hit});
    pos += tokens_[hit].text.size();
    run = pos;
  }
  if (run < text.size()) out.push_back({text.substr(run), -1});
  return out;
}

std::vector<TextSpan> VocabTokenizer::special_spans(std::string_view text) const {
  std::vector<TextSpan> out;
  for (const TextFragment& f : vocab_.split_special(text, true))
    if (f.id >= 0 && vocab_.token(f.id).type != TokenType::UserDefined) {
      const size_t begin = size_t(f.text.data() - text.data());
      out.push_back({begin, begin + f.text.size()});
    }
  return out;
}

}  // namespace qlora
