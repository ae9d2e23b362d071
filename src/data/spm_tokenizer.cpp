// SentencePiece-style BPE; see spm_tokenizer.h.
#include "data/spm_tokenizer.h"

#include <cstdio>
#include <queue>

#include "core/error.h"
#include "data/utf8.h"

namespace qlora {
namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space

std::string escape_spaces(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 8);
  for (char c : text) {
    if (c == ' ') {
      out += kSpace;
    } else {
      out += c;
    }
  }
  return out;
}

// SentencePiece's remove_extra_whitespaces: drop leading and trailing spaces, collapse runs.
std::string collapse_spaces(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == ' ' && (out.empty() || out.back() == ' ')) continue;
    out += c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

struct Symbol {
  int prev = -1, next = -1;
  size_t offset = 0, len = 0;
  int32_t id = -1;
};

struct Bigram {
  double priority = 0;  // lower merges first: -score, or the merge rank
  int left = 0, right = 0;
  size_t len = 0;   // bytes of the merged piece; a mismatch marks the bigram stale
  int32_t id = -1;  // the merged token
  // Min-heap on priority, then leftmost first (llama.cpp llm_bigram_spm::comparator).
  bool operator>(const Bigram& o) const { return priority > o.priority || (priority == o.priority && left > o.left); }
};

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

}  // namespace

SpmTokenizer::SpmTokenizer(Vocab vocab, SpmOptions options)
    : VocabTokenizer(std::move(vocab), options.add_bos), options_(std::move(options)) {
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    int32_t id = vocab_.find(name);
    if (id < 0) id = vocab_.find(std::string(1, static_cast<char>(b)));  // llama.cpp byte_to_token
    byte_ids_[b] = id >= 0 ? id : vocab_.ids().unk;
  }
  for (size_t rank = 0; rank < options_.merges.size(); ++rank) {
    const auto [a, b] = options_.merges[rank];
    const int32_t merged = vocab_.find(vocab_.token(a).text + vocab_.token(b).text);
    if (merged >= 0) merge_ranks_.emplace(pair_key(a, b), std::pair{static_cast<int32_t>(rank), merged});
  }
}

void SpmTokenizer::encode_run(std::string_view text, std::vector<int32_t>& out) const {
  // One symbol per UTF-8 character, linked left to right.
  std::vector<Symbol> symbols;
  symbols.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    Symbol s;
    s.offset = pos;
    s.len = utf8::char_len(text, pos);
    s.id = vocab_.find(text.substr(pos, s.len));
    s.prev = static_cast<int>(symbols.size()) - 1;
    pos += s.len;
    s.next = pos < text.size() ? static_cast<int>(symbols.size()) + 1 : -1;
    symbols.push_back(s);
  }
  if (symbols.empty()) return;

  const bool by_rank = !options_.merges.empty();
  std::priority_queue<Bigram, std::vector<Bigram>, std::greater<>> queue;
  const auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = symbols[left];
    const Symbol& r = symbols[right];
    if (options_.split_words && text.substr(r.offset, kSpace.size()) == kSpace) return;
    Bigram bg;
    bg.left = left;
    bg.right = right;
    bg.len = l.len + r.len;
    if (by_rank) {
      if (l.id < 0 || r.id < 0) return;
      const auto it = merge_ranks_.find(pair_key(l.id, r.id));
      if (it == merge_ranks_.end()) return;
      bg.priority = it->second.first;
      bg.id = it->second.second;
    } else {
      bg.id = vocab_.find(text.substr(l.offset, bg.len));
      if (bg.id < 0) return;
      bg.priority = -static_cast<double>(vocab_.token(bg.id).score);
    }
    queue.push(bg);
  };
  for (size_t i = 1; i < symbols.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));

  while (!queue.empty()) {
    const Bigram bg = queue.top();
    queue.pop();
    Symbol& l = symbols[bg.left];
    Symbol& r = symbols[bg.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != bg.len) continue;  // stale
    l.len += r.len;
    l.id = bg.id;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) symbols[r.next].prev = bg.left;
    try_add(l.prev, bg.left);
    try_add(bg.left, l.next);
  }

  for (int i = 0; i >= 0; i = symbols[i].next) {
    const Symbol& s = symbols[i];
    if (s.id >= 0) {
      out.push_back(s.id);
      continue;
    }
    // Only single characters can lack a token (every merge yields one): byte fallback.
    for (size_t k = 0; k < s.len; ++k) {
      const int32_t id = byte_ids_[static_cast<uint8_t>(text[s.offset + k])];
      if (id < 0) {
        fail("tokenizer", "byte 0x{:02X} has no token; expected <0x{:02X}> or an unknown token in the vocabulary",
             static_cast<uint8_t>(text[s.offset + k]), static_cast<uint8_t>(text[s.offset + k]));
      }
      out.push_back(id);
    }
  }
}

std::vector<int32_t> SpmTokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  return encode_fragments(vocab_.split_special(text, parse_special), add_bos);
}

std::vector<int32_t> SpmTokenizer::encode_with_plain(std::string_view text, bool add_bos,
                                                     const std::vector<TextSpan>& plain) const {
  return encode_fragments(vocab_.split_special(text, true, &plain), add_bos);
}

std::vector<int32_t> SpmTokenizer::encode_fragments(const std::vector<TextFragment>& fragments, bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos && vocab_.ids().bos >= 0) out.push_back(vocab_.ids().bos);
  bool at_start = true, after_special = true;
  for (const TextFragment& frag : fragments) {
    if (frag.id >= 0) {
      out.push_back(frag.id);
      after_special = true;
      at_start = false;
      continue;
    }
    std::string run = options_.remove_extra_whitespaces ? collapse_spaces(frag.text) : std::string(frag.text);
    const bool prefix = (options_.space_prefix == SpmOptions::Prefix::Always && after_special) ||
                        (options_.space_prefix == SpmOptions::Prefix::First && at_start);
    if (prefix && !(options_.prefix_only_without_space && !run.empty() && run[0] == ' ')) run.insert(run.begin(), ' ');
    encode_run(escape_spaces(run), out);
    after_special = at_start = false;
  }
  return out;
}

std::string SpmTokenizer::decode_token(int32_t id, int32_t prev) const {
  const VocabToken& t = vocab_.token(id);
  switch (t.type) {
    case TokenType::Byte:
      return std::string(1, static_cast<char>(byte_piece_value(t.text)));  // checked by Vocab
    case TokenType::Control:
    case TokenType::Unknown:
    case TokenType::UserDefined:
      return t.text;
    default:
      break;
  }
  std::string piece;
  piece.reserve(t.text.size());
  for (size_t pos = 0; pos < t.text.size();) {
    if (t.text.compare(pos, kSpace.size(), kSpace) == 0) {
      piece += ' ';
      pos += kSpace.size();
    } else {
      piece += t.text[pos++];
    }
  }
  // The dummy prefix: the space that encode put at the start of a text run.
  const bool strip = (options_.space_prefix == SpmOptions::Prefix::Always && (prev < 0 || vocab_.is_special(prev))) ||
                     (options_.space_prefix == SpmOptions::Prefix::First && prev < 0);
  if (strip && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
  return piece;
}

}  // namespace qlora
