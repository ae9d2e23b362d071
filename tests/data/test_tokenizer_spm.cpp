// SentencePiece-style BPE against llama.cpp's llama-spm vectors (46 strings, ids without BOS):
// the GGUF vocab, the Llama 2 tokenizer.model (protobuf) and tokenizer.bin (llama2.c) of the same
// vocabulary; stories260K's tok512.bin against the vocab in its GGUF; decode round trips and the
// dummy-prefix space. Skips when ../shared is absent.
#include <gtest/gtest.h>

#include <cstdio>

#include "core/error.h"
#include "data/tokenizer.h"
#include "test_paths.h"
#include "vocab_vectors.h"

namespace qlora {
namespace {

using test::shared_path;

const std::string kVectors = "data/llama-cpp-vocab-tests/ggml-vocab-llama-spm.gguf";
constexpr int kExpectedCases = 46;  // strings in the .inp file

void expect_all_match(const std::string& tokenizer_path, const char* name) {
  if (!test::exists(tokenizer_path) || !test::exists(shared_path(kVectors + ".inp"))) {
    GTEST_SKIP() << "missing " << tokenizer_path;
  }
  const auto tok = load_tokenizer(tokenizer_path);
  const auto cases = test::read_vocab_cases(shared_path(kVectors + ".inp"), shared_path(kVectors + ".out"));
  ASSERT_EQ(static_cast<int>(cases.size()), kExpectedCases);
  std::vector<std::string> mismatches;
  const int ok = test::count_matches(*tok, cases, name, &mismatches);
  std::printf("[ match ] %s vs llama-spm vectors: %d/%zu\n", name, ok, cases.size());
  for (const auto& m : mismatches) ADD_FAILURE() << m;
  EXPECT_EQ(ok, static_cast<int>(cases.size()));
}

TEST(TokenizerSpm, GgufVocabMatchesLlamaCppVectors) { expect_all_match(shared_path(kVectors), "llama-spm.gguf"); }

TEST(TokenizerSpm, SentencePieceModelMatchesLlamaCppVectors) {
  expect_all_match(shared_path("models/llama2-tokenizer/tokenizer.model"), "llama2 tokenizer.model");
}

TEST(TokenizerSpm, Llama2cBinMatchesLlamaCppVectors) {
  expect_all_match(shared_path("models/llama2-tokenizer/tokenizer.bin"), "llama2 tokenizer.bin");
}

TEST(TokenizerSpm, SpecialIdsAndFlags) {
  const std::string path = shared_path(kVectors);
  if (!test::exists(path)) GTEST_SKIP() << "missing " << path;
  const auto tok = load_tokenizer(path);
  EXPECT_EQ(tok->kind(), "spm");
  EXPECT_EQ(tok->vocab_size(), 32000);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_TRUE(tok->is_eog(2));
  EXPECT_FALSE(tok->is_eog(1));
  EXPECT_TRUE(tok->adds_bos());
  EXPECT_TRUE(tok->is_special(1));
  EXPECT_FALSE(tok->is_special(15043));
  EXPECT_EQ(tok->token_text(15043), "\xE2\x96\x81Hello");
  EXPECT_EQ(tok->token_id("\xE2\x96\x81Hello"), 15043);
  EXPECT_EQ(tok->token_id("no such piece"), -1);
  // BOS only when asked; "<s>" in text is BOS when special tokens are parsed, text otherwise.
  EXPECT_EQ(tok->encode("Hello", true), (std::vector<int32_t>{1, 15043}));
  EXPECT_EQ(tok->encode("Hello", false), (std::vector<int32_t>{15043}));
  EXPECT_EQ(tok->encode("<s>Hello", false, true), (std::vector<int32_t>{1, 15043}));
  EXPECT_NE(tok->encode("<s>Hello", false, false)[0], 1);
  EXPECT_THROW(tok->decode_token(32000), Error);
  EXPECT_THROW(tok->decode_token(-1), Error);
}

TEST(TokenizerSpm, DecodeRoundTripsAndDummyPrefix) {
  const std::string path = shared_path(kVectors);
  if (!test::exists(path)) GTEST_SKIP() << "missing " << path;
  const auto tok = load_tokenizer(path);
  const auto cases = test::read_vocab_cases(shared_path(kVectors + ".inp"), shared_path(kVectors + ".out"));
  for (const auto& c : cases) {
    EXPECT_EQ(tok->decode(tok->encode(c.text, false)), c.text);
    // After BOS the dummy-prefix space is dropped too.
    const auto with_bos = tok->encode(c.text, true);
    EXPECT_EQ(tok->decode(with_bos), "<s>" + c.text);
    EXPECT_EQ(tok->decode(with_bos, true), c.text);
  }
  // Byte fallback tokens decode to their bytes: "½" has no piece in ied 4 ½ months -> <0xC2><0xBD>.
  EXPECT_EQ(tok->decode_token(tok->token_id("<0x0A>"), 13), "\n");
  // Single tokens: the prefix space goes only at the start or after a special token.
  EXPECT_EQ(tok->decode_token(15043, -1), "Hello");
  EXPECT_EQ(tok->decode_token(15043, 1), "Hello");
  EXPECT_EQ(tok->decode_token(15043, 15043), " Hello");
  EXPECT_EQ(tok->decode_token(1), "<s>");
}

// stories260K ships its 512-piece vocabulary twice: llama2.c tok512.bin and inside its GGUF.
TEST(TokenizerSpm, Stories260kBinAgreesWithItsGguf) {
  const std::string bin = shared_path("models/stories260K/tok512.bin");
  const std::string gguf = shared_path("models/stories260K/tinyllamas-stories-260k-f32.gguf");
  if (!test::exists(bin) || !test::exists(gguf)) GTEST_SKIP() << "missing stories260K";
  const auto a = load_tokenizer(bin);
  const auto b = load_tokenizer(gguf);
  ASSERT_EQ(a->vocab_size(), 512);
  ASSERT_EQ(b->vocab_size(), 512);
  for (int32_t id = 0; id < 512; ++id) EXPECT_EQ(a->decode_token(id, 5), b->decode_token(id, 5)) << "id " << id;
  const char* texts[] = {
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.",
      "Lily's mom said, \"Lily, let's go to the park.\"\nLily was sad and didn't know what to do.",
      "  two leading spaces, tabs\tand unicode: caf\xC3\xA9 \xE2\x9C\x85 \xF0\x9F\xA6\x99",
      "",
      " ",
      "\n\n",
      "1234567890 !@#$%^&*()",
  };
  int same = 0;
  for (const char* t : texts) {
    const auto ids = a->encode(t, true);
    EXPECT_EQ(ids, b->encode(t, true)) << "'" << t << "'";
    same += ids == b->encode(t, true);
    EXPECT_EQ(a->decode(ids), std::string("<s>") + t);
  }
  std::printf("[ match ] stories260K tok512.bin vs GGUF vocab: %d/%zu texts\n", same, std::size(texts));
  // llama2.c's encoder output for its canonical prompt start (BOS, " Once", ...).
  const auto ids = a->encode("Once upon a time", true);
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(a->token_text(ids[1]).rfind("\xE2\x96\x81", 0), 0u);
}

}  // namespace
}  // namespace qlora
