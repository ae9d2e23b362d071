// Seeded random strings (many scripts, emoji, combining marks, odd whitespace, contractions)
// against the reference implementations' own ids (golden/random_text_golden.json, made by
// golden/make_random_text_golden.py): Google sentencepiece for the Llama 2 vocabulary (tokenizer.model,
// tokenizer.bin and GGUF), Hugging Face tokenizers for Llama 3 (tiktoken tokenizer.model). Every
// text must also decode back to itself. Skips when ../shared is absent.
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "data/tokenizer.h"
#include "test_paths.h"
#include "vocab_vectors.h"

namespace qlora {
namespace {

using test::shared_path;

void expect_golden(const std::string& tokenizer_path, const char* key) {
  if (!test::exists(tokenizer_path)) GTEST_SKIP() << "missing " << tokenizer_path;
  const auto golden =
      nlohmann::json::parse(test::read_all(test::source_path("tests/data/golden/random_text_golden.json")));
  const auto texts = golden.at("texts").get<std::vector<std::string>>();
  const auto tok = load_tokenizer(tokenizer_path);
  int ok = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto expected = golden.at(key).at(i).get<std::vector<int32_t>>();
    const auto got = tok->encode(texts[i], false, false);
    ok += got == expected;
    EXPECT_EQ(got, expected) << "text " << i << ": '" << texts[i] << "'";
    EXPECT_EQ(tok->decode(got), texts[i]) << "text " << i;
  }
  std::printf("[ match ] %s vs %s reference on random texts (seed %d): %d/%zu\n", tokenizer_path.c_str(), key,
              golden.at("seed").get<int>(), ok, texts.size());
}

TEST(TokenizerRandom, Llama2ModelMatchesSentencePiece) {
  expect_golden(shared_path("models/llama2-tokenizer/tokenizer.model"), "llama2");
}
TEST(TokenizerRandom, Llama2BinMatchesSentencePiece) {
  expect_golden(shared_path("models/llama2-tokenizer/tokenizer.bin"), "llama2");
}
TEST(TokenizerRandom, LlamaSpmGgufMatchesSentencePiece) {
  expect_golden(shared_path("data/llama-cpp-vocab-tests/ggml-vocab-llama-spm.gguf"), "llama2");
}
TEST(TokenizerRandom, Llama3TiktokenMatchesHuggingFace) {
  expect_golden(shared_path("models/llama3-tokenizer/tokenizer.model"), "llama3");
}

}  // namespace
}  // namespace qlora
