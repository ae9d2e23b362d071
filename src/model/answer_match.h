// Final-answer extraction and matching for GSM8K-style evaluation: a reference answer ends with
// "#### <number>"; a generation's answer is the first number after its last "####" when it writes
// one, else the last number in it. Numbers are normalised (thousands commas, a leading '+', a
// trailing '.', trailing zeros after the decimal point and "$" dropped) so "1,000.50" == "1000.5".
// Tested in tests/unit/test_answer_match.cpp.
#pragma once
#include <optional>
#include <string>

namespace qlora {

// Whether a reference answer carries a GSM8K "#### <answer>" line.
bool has_final_answer_marker(const std::string& reference);
// The normalised final number of `text` (see above); nullopt when it holds no number.
std::optional<std::string> extract_final_number(const std::string& text);
// "1,234" -> "1234", "+5" -> "5", "18.00" -> "18", "0.50" -> "0.5", "-0" -> "0".
std::string normalize_number(const std::string& number);
// Exact match of the final numbers of a generation and a reference; false when either has none.
bool answers_match(const std::string& generated, const std::string& reference);

}  // namespace qlora
