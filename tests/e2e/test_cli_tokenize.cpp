// `qlora tokenize` end to end: --json prints the ids the library's tokenizer gives (with and
// without BOS) for a tokenizer-only GGUF, the plain output lists ids and pieces, --file reads a
// file, missing input or a bad path exits non-zero with a message, and special tokens written in
// the text are text unless --parse-special.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "data/tokenizer.h"
#include "test_paths.h"
#include "cli_runner.h"

namespace {

using qlora::test::RunResult;

// Runs `qlora tokenize ARGS`.
RunResult run(const std::string& args) { return qlora::test::run_cli("tokenize " + args); }

const std::string kSpm = qlora::test::shared_path("data/llama-cpp-vocab-tests/ggml-vocab-llama-spm.gguf");
const std::string kGpt2 = qlora::test::shared_path("data/llama-cpp-vocab-tests/ggml-vocab-gpt-2.gguf");

// Why the test cannot run here, or "" when it can. GTEST_SKIP only returns from the function it is
// written in, so the test body itself must skip on the answer.
std::string missing_inputs() {
  if (!qlora::test::exists(qlora::test::binary_path("qlora"))) return "qlora binary not built";
  if (!qlora::test::exists(kSpm) || !qlora::test::exists(kGpt2)) return "../shared vocab files missing";
  return "";
}

#define SKIP_UNLESS_READY()                                     \
  if (const std::string why = missing_inputs(); !why.empty()) \
  GTEST_SKIP() << why

TEST(CliTokenize, JsonMatchesTheLibrary) {
  SKIP_UNLESS_READY();
  const std::string text = "Hello world, it's 2026!";
  const auto tok = qlora::load_tokenizer(kSpm);
  const RunResult with_bos = run(kSpm + " --text \"" + text + "\" --json");
  ASSERT_EQ(with_bos.exit_code, 0) << with_bos.out;
  EXPECT_EQ(nlohmann::json::parse(with_bos.out).get<std::vector<int32_t>>(), tok->encode(text, true));
  const RunResult no_bos = run(kSpm + " --text \"" + text + "\" --json --no-bos");
  ASSERT_EQ(no_bos.exit_code, 0) << no_bos.out;
  EXPECT_EQ(nlohmann::json::parse(no_bos.out).get<std::vector<int32_t>>(), tok->encode(text, false));
}

TEST(CliTokenize, PlainOutputAndFile) {
  SKIP_UNLESS_READY();
  const RunResult r = run(kGpt2 + " --text \"Hello world\"");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("\"Hello\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\" world\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("2 tokens, 11 bytes"), std::string::npos) << r.out;
  const RunResult f = run(kGpt2 + " --file " + kGpt2 + ".inp --json");
  ASSERT_EQ(f.exit_code, 0) << f.out;
  EXPECT_GT(nlohmann::json::parse(f.out).size(), 10u);
}

TEST(CliTokenize, BadInputExitsNonZero) {
  SKIP_UNLESS_READY();
  const RunResult none = run(kSpm);
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.out.find("--text or --file"), std::string::npos) << none.out;
  const RunResult missing = run("/nonexistent/tok.gguf --text hi");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.out.find("/nonexistent/tok.gguf"), std::string::npos) << missing.out;
  const RunResult both = run(kSpm + " --text a --file b");
  EXPECT_NE(both.exit_code, 0);
}

TEST(CliTokenize, SpecialTokensInTextAreTextUnlessParseSpecial) {
  SKIP_UNLESS_READY();
  const auto tok = qlora::load_tokenizer(kSpm);
  const std::string text = "a</s>b";
  const RunResult plain = run(kSpm + " --text \"" + text + "\" --json --no-bos");
  ASSERT_EQ(plain.exit_code, 0) << plain.out;
  const auto plain_ids = nlohmann::json::parse(plain.out).get<std::vector<int32_t>>();
  EXPECT_EQ(plain_ids, tok->encode(text, false, false));
  for (int32_t id : plain_ids) EXPECT_NE(id, tok->eos_id()) << plain.out;
  const RunResult parsed = run(kSpm + " --text \"" + text + "\" --json --no-bos --parse-special");
  ASSERT_EQ(parsed.exit_code, 0) << parsed.out;
  const auto parsed_ids = nlohmann::json::parse(parsed.out).get<std::vector<int32_t>>();
  EXPECT_EQ(parsed_ids, tok->encode(text, false, true));
  EXPECT_NE(std::find(parsed_ids.begin(), parsed_ids.end(), tok->eos_id()), parsed_ids.end()) << parsed.out;
}

}  // namespace
