// Byte-level BPE; see bpe_tokenizer.h.
#include "data/bpe_tokenizer.h"

#include <queue>

#include "core/error.h"
#include "data/byte_level.h"

namespace qlora {
namespace {

struct Symbol {
  int prev = -1, next = -1;
  size_t offset = 0, len = 0;
  int32_t id = -1;
};

struct Bigram {
  int32_t rank = 0;
  int left = 0, right = 0;
  int32_t left_id = -1, right_id = -1;  // a symbol whose id changed has merged: stale
  int32_t id = -1;
  // Min-heap on rank, then leftmost first (llama.cpp llm_bigram_bpe::comparator).
  bool operator>(const Bigram& o) const { return rank > o.rank || (rank == o.rank && left > o.left); }
};

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

bool has_raw_bytes(TokenType t) {
  return t == TokenType::Normal || t == TokenType::Unused || t == TokenType::Undefined || t == TokenType::Byte;
}

}  // namespace

BpeTokenizer::BpeTokenizer(Vocab vocab, BpeOptions options)
    : VocabTokenizer(std::move(vocab), options.add_bos), options_(std::move(options)), pre_(options_.pre_patterns) {
  const int32_t n = vocab_.size();
  bytes_.resize(n);
  raw_index_.reserve(n);
  for (int32_t id = 0; id < n; ++id) {
    const VocabToken& t = vocab_.token(id);
    if (!has_raw_bytes(t.type)) {
      bytes_[id] = t.text;  // special tokens are spelled as themselves
      continue;
    }
    // A piece outside the byte alphabet (seen in some converted vocabularies) stands for its
    // own UTF-8 bytes.
    if (!byte_level_decode(t.text, bytes_[id])) bytes_[id] = t.text;
    raw_index_[bytes_[id]] = id;
  }
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    const auto it = raw_index_.find(std::string_view(&c, 1));
    byte_ids_[b] = it != raw_index_.end() ? it->second : -1;
  }

  if (options_.merges_from_ranks) {
    // Every split of a token into two tokens is a merge ranked by the token (tiktoken).
    merge_ranks_.reserve(static_cast<size_t>(n) * 3);
    for (int32_t id = 0; id < n; ++id) {
      const std::string_view s = bytes_[id];
      if (!has_raw_bytes(vocab_.token(id).type) || s.size() < 2) continue;
      for (size_t k = 1; k < s.size(); ++k) {
        const auto a = raw_index_.find(s.substr(0, k));
        if (a == raw_index_.end()) continue;
        const auto b = raw_index_.find(s.substr(k));
        if (b == raw_index_.end()) continue;
        merge_ranks_.emplace(pair_key(a->second, b->second), std::pair{id, id});
      }
    }
  } else {
    merge_ranks_.reserve(options_.merges.size());
    for (size_t rank = 0; rank < options_.merges.size(); ++rank) {
      const auto& [a, b] = options_.merges[rank];
      const int32_t ia = vocab_.find(a), ib = vocab_.find(b), merged = vocab_.find(a + b);
      // Hugging Face rejects such a rule at load time; a vocabulary that has it can never use it.
      if (ia < 0 || ib < 0 || merged < 0) continue;
      merge_ranks_.emplace(pair_key(ia, ib), std::pair{static_cast<int32_t>(rank), merged});
    }
  }
  options_.merges.clear();
  options_.merges.shrink_to_fit();
}

void BpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (options_.ignore_merges) {
    const auto it = raw_index_.find(word);
    if (it != raw_index_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<Symbol> symbols(word.size());
  for (size_t i = 0; i < word.size(); ++i) {
    symbols[i] = {static_cast<int>(i) - 1, i + 1 < word.size() ? static_cast<int>(i) + 1 : -1, i, 1,
                  byte_ids_[static_cast<uint8_t>(word[i])]};
  }
  std::priority_queue<Bigram, std::vector<Bigram>, std::greater<>> queue;
  const auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const int32_t a = symbols[left].id, b = symbols[right].id;
    if (a < 0 || b < 0) return;
    const auto it = merge_ranks_.find(pair_key(a, b));
    if (it == merge_ranks_.end()) return;
    queue.push(Bigram{it->second.first, left, right, a, b, it->second.second});
  };
  for (size_t i = 1; i < symbols.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));

  while (!queue.empty()) {
    const Bigram bg = queue.top();
    queue.pop();
    Symbol& l = symbols[bg.left];
    Symbol& r = symbols[bg.right];
    if (l.len == 0 || r.len == 0 || l.id != bg.left_id || r.id != bg.right_id || l.next != bg.right) continue;
    l.len += r.len;
    l.id = bg.id;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) symbols[r.next].prev = bg.left;
    try_add(l.prev, bg.left);
    try_add(bg.left, l.next);
  }

  for (int i = 0; i >= 0 && !symbols.empty(); i = symbols[i].next) {
    if (symbols[i].id >= 0) {
      out.push_back(symbols[i].id);
    } else if (vocab_.ids().unk >= 0) {  // a byte the vocabulary cannot spell
      out.push_back(vocab_.ids().unk);
    } else {
      fail("tokenizer", "byte 0x{:02X} has no token and the vocabulary has no unknown token",
           static_cast<uint8_t>(word[symbols[i].offset]));
    }
  }
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  return encode_fragments(vocab_.split_special(text, parse_special), add_bos);
}

std::vector<int32_t> BpeTokenizer::encode_with_plain(std::string_view text, bool add_bos,
                                                     const std::vector<TextSpan>& plain) const {
  return encode_fragments(vocab_.split_special(text, true, &plain), add_bos);
}

std::vector<int32_t> BpeTokenizer::encode_fragments(const std::vector<TextFragment>& fragments, bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos && vocab_.ids().bos >= 0) out.push_back(vocab_.ids().bos);
  for (const TextFragment& frag : fragments) {
    if (frag.id >= 0) {
      out.push_back(frag.id);
      continue;
    }
    for (std::string_view word : pre_.split(frag.text)) encode_word(word, out);
  }
  return out;
}

std::string BpeTokenizer::decode_token(int32_t id, int32_t /*prev*/) const {
  vocab_.token(id);  // range check
  return bytes_[id];
}

}  // namespace qlora
