// GSM8K answer extraction and matching (src/model/answer_match.h): the "####" rule, the
// last-number fallback, number normalisation, and real GSM8K references.
#include <gtest/gtest.h>

#include "model/answer_match.h"

namespace qlora {
namespace {

TEST(AnswerMatch, ReferenceMarker) {
  EXPECT_TRUE(has_final_answer_marker("She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"));
  EXPECT_FALSE(has_final_answer_marker("The answer is 7."));
  EXPECT_FALSE(has_final_answer_marker("#### none"));
}

TEST(AnswerMatch, ExtractsAfterTheLastMarker) {
  EXPECT_EQ(extract_final_number("Janet sells 16 - 3 - 4 = 9 duck eggs.\n#### 18"), "18");
  EXPECT_EQ(extract_final_number("#### 5 then more text 99"), "5");
  EXPECT_EQ(extract_final_number("first #### 1\nsecond #### 2"), "2");
  // A marker with no number after it falls back to the last number of the text.
  EXPECT_EQ(extract_final_number("12 and 13 ####"), "13");
}

TEST(AnswerMatch, LastNumberWithoutMarker) {
  EXPECT_EQ(extract_final_number("So she makes 9 * 2 = $18 every day."), "18");
  EXPECT_EQ(extract_final_number("The total is 1,234,567 dollars"), "1234567");
  EXPECT_EQ(extract_final_number("It is -5 degrees"), "-5");
  EXPECT_EQ(extract_final_number("Pay 3.50."), "3.5");
  EXPECT_EQ(extract_final_number("no digits here"), std::nullopt);
  // A comma between numbers separates them.
  EXPECT_EQ(extract_final_number("values 3, 4"), "4");
}

TEST(AnswerMatch, Normalisation) {
  EXPECT_EQ(normalize_number("1,000"), "1000");
  EXPECT_EQ(normalize_number("+5"), "5");
  EXPECT_EQ(normalize_number("18.00"), "18");
  EXPECT_EQ(normalize_number("0.50"), "0.5");
  EXPECT_EQ(normalize_number("007"), "7");
  EXPECT_EQ(normalize_number("-0"), "0");
  EXPECT_EQ(normalize_number("$12"), "12");
}

TEST(AnswerMatch, Matching) {
  const std::string reference = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72";
  EXPECT_TRUE(answers_match("She sold 48 + 24 = 72 clips.", reference));
  EXPECT_TRUE(answers_match("48+24=72\n#### 72.0", reference));
  EXPECT_FALSE(answers_match("She sold 48 + 24 = 71 clips.", reference));
  EXPECT_FALSE(answers_match("I do not know.", reference));
  EXPECT_TRUE(answers_match("The answer is 1,000.", "#### 1000"));
  EXPECT_FALSE(answers_match("72", "no number"));
}

}  // namespace
}  // namespace qlora
