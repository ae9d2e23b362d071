// GSM8K answer extraction: a hand-written scan (no std::regex) for numbers -?\d[\d,]*(\.\d+)?,
// where a comma counts only between digits so "3, 4" is two numbers.
#include "model/answer_match.h"

#include <cctype>
#include <vector>

namespace qlora {

namespace {

bool is_digit(char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; }

// Every number in `text`, in order, as written (sign included, commas kept).
std::vector<std::string> find_numbers(const std::string& text) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < text.size()) {
    if (!is_digit(text[i])) {
      ++i;
      continue;
    }
    size_t begin = i;
    if (begin > 0 && (text[begin - 1] == '-' || text[begin - 1] == '+')) --begin;
    size_t end = i;
    while (end < text.size()) {
      if (is_digit(text[end])) {
        ++end;
      } else if (text[end] == ',' && end + 1 < text.size() && is_digit(text[end + 1]) && is_digit(text[end - 1])) {
        ++end;
      } else {
        break;
      }
    }
    if (end + 1 < text.size() && text[end] == '.' && is_digit(text[end + 1])) {
      ++end;
      while (end < text.size() && is_digit(text[end])) ++end;
    }
    out.push_back(text.substr(begin, end - begin));
    i = end;
  }
  return out;
}

}  // namespace

bool has_final_answer_marker(const std::string& reference) {
  const size_t at = reference.rfind("####");
  return at != std::string::npos && !find_numbers(reference.substr(at + 4)).empty();
}

std::string normalize_number(const std::string& number) {
  std::string s;
  for (char c : number)
    if (c != ',' && c != '$' && c != ' ') s += c;
  if (!s.empty() && s[0] == '+') s.erase(0, 1);
  if (!s.empty() && s.back() == '.') s.pop_back();
  if (s.find('.') != std::string::npos) {
    while (!s.empty() && s.back() == '0') s.pop_back();
    if (!s.empty() && s.back() == '.') s.pop_back();
  }
  const bool negative = !s.empty() && s[0] == '-';
  std::string digits = negative ? s.substr(1) : s;
  // Leading zeros of the integer part ("007" -> "7", but "0.5" stays).
  while (digits.size() > 1 && digits[0] == '0' && digits[1] != '.') digits.erase(0, 1);
  if (digits.empty()) digits = "0";
  if (digits == "0") return "0";
  return negative ? "-" + digits : digits;
}

std::optional<std::string> extract_final_number(const std::string& text) {
  const size_t at = text.rfind("####");
  if (at != std::string::npos) {
    const std::vector<std::string> after = find_numbers(text.substr(at + 4));
    if (!after.empty()) return normalize_number(after.front());
  }
  const std::vector<std::string> all = find_numbers(text);
  if (all.empty()) return std::nullopt;
  return normalize_number(all.back());
}

bool answers_match(const std::string& generated, const std::string& reference) {
  const auto got = extract_final_number(generated), want = extract_final_number(reference);
  return got && want && *got == *want;
}

}  // namespace qlora
