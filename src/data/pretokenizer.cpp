// Regex pre-tokenizer on PCRE2; see pretokenizer.h.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "data/pretokenizer.h"

#include <pcre2.h>

#include "core/error.h"
#include "data/utf8.h"

namespace qlora {

const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Pattern =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct Pretokenizer::Regex {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Regex() { pcre2_code_free(code); }
};

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof(buf));
  return reinterpret_cast<const char*>(buf);
}

// Length of the valid UTF-8 sequence at `pos`, 0 when the byte there starts no valid sequence.
size_t valid_utf8_len(std::string_view s, size_t pos) {
  const auto b = [&](size_t i) { return static_cast<uint8_t>(s[pos + i]); };
  const uint8_t c = b(0);
  const size_t left = s.size() - pos;
  const auto cont = [&](size_t i) { return i < left && (b(i) & 0xC0) == 0x80; };
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if (c == 0xE0 && b(1) < 0xA0) return 0;   // overlong
    if (c == 0xED && b(1) >= 0xA0) return 0;  // surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (c == 0xF0 && b(1) < 0x90) return 0;   // overlong
    if (c == 0xF4 && b(1) >= 0x90) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

// Unicode White_Space, which \s means in Rust's regex (Hugging Face tokenizers) and in llama.cpp's
// tables. PCRE2's UCP \s also takes U+180E, so patterns get this class instead.
constexpr const char* kWhiteSpace =
    R"(\t\n\x{0B}\f\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";

// Rewrites \s (and \S outside a character class) as explicit White_Space classes.
std::string with_unicode_whitespace(const std::string& p) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char d = p[++i];
      if (d == 'Q') {  // \Q...\E quotes everything up to \E
        const size_t end = p.find("\\E", i + 1);
        const size_t stop = end == std::string::npos ? p.size() : end + 2;
        out.append(p, i - 1, stop - (i - 1));
        i = stop - 1;
      } else if (d == 's') {
        out += in_class ? std::string(kWhiteSpace) : "[" + std::string(kWhiteSpace) + "]";
      } else if (d == 'S' && !in_class) {
        out += "[^" + std::string(kWhiteSpace) + "]";
      } else {
        out += c;
        out += d;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];  // a leading ] is literal
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {  // POSIX [:name:]
      const size_t end = p.find(":]", i + 2);
      if (end != std::string::npos) {
        out.append(p, i, end + 2 - i);
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

}  // namespace

Pretokenizer::Pretokenizer(std::vector<std::string> patterns) : patterns_(std::move(patterns)) {
  for (const auto& given : patterns_) {
    auto re = std::make_shared<Regex>();
    int err = 0;
    PCRE2_SIZE err_offset = 0;
    const std::string pattern = with_unicode_whitespace(given);
    re->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &err,
                             &err_offset, nullptr);
    if (re->code == nullptr) {
      fail("tokenizer", "bad pre-tokenizer regex /{}/ at offset {} of /{}/: {}", given, err_offset, pattern,
           pcre2_message(err));
    }
    // JIT is an optimization only: without it (no JIT support in this build) pcre2_match runs.
    re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
    regexes_.push_back(std::move(re));
  }
}

std::vector<std::string> Pretokenizer::preset(std::string_view name) {
  if (name == "gpt2") return {kGpt2Pattern};
  if (name == "llama3") return {kLlama3Pattern};
  if (name == "qwen2") return {kQwen2Pattern};
  // SmolLM (and StarCoder, Refact, Command-R ...): Hugging Face Sequence[Digits(individual_digits),
  // ByteLevel(use_regex)]; llama.cpp runs "\p{N}" then GPT-2's pattern.
  if (name == "smollm") return {R"(\p{N})", kGpt2Pattern};
  if (name == "default") {
    return {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2Pattern, R"(\p{N}+)", "[0-9][0-9][0-9]"};
  }
  fail("tokenizer", "unknown pre-tokenizer preset '{}'; expected gpt2, llama3, qwen2, smollm or default", name);
}

void Pretokenizer::split_valid(const Regex& re, std::string_view text, std::vector<std::string_view>& out) const {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(re.code, nullptr);
  if (md == nullptr) fail("tokenizer", "out of memory creating PCRE2 match data");
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t last = 0;   // end of the last piece emitted
  size_t start = 0;  // where the next search begins
  while (start < text.size()) {
    int rc = PCRE2_ERROR_JIT_STACKLIMIT;
    if (re.jit) rc = pcre2_jit_match(re.code, subject, text.size(), start, 0, md, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {  // JIT off, or its stack too small: interpret
      rc = pcre2_match(re.code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      fail("tokenizer", "pre-tokenizer regex failed on a {}-byte text: {}", text.size(), pcre2_message(rc));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t m_begin = ov[0], m_end = ov[1];
    if (m_end == m_begin) {  // an empty match splits nothing; step over one character
      start = m_begin + utf8::char_len(text, m_begin);
      continue;
    }
    if (m_begin > last) out.push_back(text.substr(last, m_begin - last));
    out.push_back(text.substr(m_begin, m_end - m_begin));
    last = start = m_end;
  }
  pcre2_match_data_free(md);
  if (last < text.size()) out.push_back(text.substr(last));
}

std::vector<std::string_view> Pretokenizer::split(std::string_view text) const {
  std::vector<std::string_view> pieces;
  if (text.empty()) return pieces;
  // Invalid UTF-8 bytes are cut out first (PCRE2 in UTF mode rejects them); each becomes a
  // piece of its own, so byte-level BPE still encodes every byte.
  size_t run = 0, pos = 0;
  while (pos < text.size()) {
    const size_t n = valid_utf8_len(text, pos);
    if (n > 0) {
      pos += n;
      continue;
    }
    if (pos > run) pieces.push_back(text.substr(run, pos - run));
    pieces.push_back(text.substr(pos, 1));
    run = ++pos;
  }
  if (run < text.size()) pieces.push_back(text.substr(run));
  const bool any_invalid = !(pieces.size() == 1 && pieces[0].size() == text.size());

  for (const auto& re : regexes_) {
    std::vector<std::string_view> next;
    next.reserve(pieces.size() * 2);
    for (std::string_view piece : pieces) {
      if (any_invalid && piece.size() == 1 && valid_utf8_len(piece, 0) == 0) {
        next.push_back(piece);
      } else {
        split_valid(*re, piece, next);
      }
    }
    pieces = std::move(next);
  }
  return pieces;
}

}  // namespace qlora
