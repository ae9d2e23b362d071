// Byte-level BPE against llama.cpp's vectors (46 strings, ids without BOS): gpt-2 (GGUF vocab,
// pre "gpt-2") and llama-bpe (Meta's Llama 3 tiktoken tokenizer.model; llama.cpp's GGUF of the same
// vocab is not shipped). Also the Llama 3 special tokens, decode round trips including invalid
// UTF-8, and the pre-tokenizer presets (SmolLM's single digits, Qwen2's). Skips when ../shared is
// absent.
#include <gtest/gtest.h>

#include <cstdio>

#include "core/error.h"
#include "data/pretokenizer.h"
#include "data/tokenizer.h"
#include "test_paths.h"
#include "vocab_vectors.h"

namespace qlora {
namespace {

using test::shared_path;

const std::string kDir = "data/llama-cpp-vocab-tests/";
const std::string kLlama3 = "models/llama3-tokenizer/tokenizer.model";

void expect_all_match(const Tokenizer& tok, const std::string& vectors, const char* name) {
  const auto cases = test::read_vocab_cases(shared_path(kDir + vectors + ".inp"), shared_path(kDir + vectors + ".out"));
  ASSERT_EQ(cases.size(), 46u);
  std::vector<std::string> mismatches;
  const int ok = test::count_matches(tok, cases, name, &mismatches);
  std::printf("[ match ] %s vs %s vectors: %d/%zu\n", name, vectors.c_str(), ok, cases.size());
  for (const auto& m : mismatches) ADD_FAILURE() << m;
  EXPECT_EQ(ok, static_cast<int>(cases.size()));
}

TEST(TokenizerBpe, Gpt2GgufMatchesLlamaCppVectors) {
  const std::string path = shared_path(kDir + "ggml-vocab-gpt-2.gguf");
  if (!test::exists(path)) GTEST_SKIP() << "missing " << path;
  const auto tok = load_tokenizer(path);
  EXPECT_EQ(tok->kind(), "bpe");
  EXPECT_EQ(tok->vocab_size(), 50257);
  EXPECT_EQ(tok->eos_id(), 50256);
  EXPECT_TRUE(tok->is_eog(50256));
  EXPECT_FALSE(tok->adds_bos());
  expect_all_match(*tok, "ggml-vocab-gpt-2.gguf", "gpt-2.gguf");
}

TEST(TokenizerBpe, Llama3TiktokenMatchesLlamaCppVectors) {
  const std::string path = shared_path(kLlama3);
  if (!test::exists(path)) GTEST_SKIP() << "missing " << path;
  const auto tok = load_tokenizer(path);
  EXPECT_EQ(tok->kind(), "bpe");
  expect_all_match(*tok, "ggml-vocab-llama-bpe.gguf", "llama3 tokenizer.model (tiktoken)");
}

TEST(TokenizerBpe, Llama3SpecialTokens) {
  const std::string path = shared_path(kLlama3);
  if (!test::exists(path)) GTEST_SKIP() << "missing " << path;
  const auto tok = load_tokenizer(path);
  EXPECT_EQ(tok->vocab_size(), 128256);
  EXPECT_EQ(tok->bos_id(), 128000);
  EXPECT_EQ(tok->eos_id(), 128001);
  EXPECT_EQ(tok->pad_id(), 128004);
  EXPECT_TRUE(tok->adds_bos());
  EXPECT_EQ(tok->token_id("<|begin_of_text|>"), 128000);
  EXPECT_EQ(tok->token_id("<|start_header_id|>"), 128006);
  EXPECT_EQ(tok->token_id("<|end_header_id|>"), 128007);
  EXPECT_EQ(tok->token_id("<|eot_id|>"), 128009);
  EXPECT_EQ(tok->token_id("<|reserved_special_token_245|>"), 128255);
  for (int32_t id : {128001, 128008, 128009}) EXPECT_TRUE(tok->is_eog(id)) << id;
  EXPECT_FALSE(tok->is_eog(128000));
  EXPECT_TRUE(tok->is_special(128006));
  EXPECT_FALSE(tok->is_special(9906));
  // Llama 3 chat framing: special tokens in the text are single ids (Hugging Face's ids for
  // "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>").
  const std::vector<int32_t> chat = {128000, 128006, 882, 128007, 271, 13347, 128009};
  EXPECT_EQ(tok->encode("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", true), chat);
  EXPECT_EQ(tok->decode(chat), "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
  EXPECT_EQ(tok->decode(chat, true), "user\n\nHi");
  // Without parse_special the same text is plain text.
  const auto plain = tok->encode("<|eot_id|>", false, false);
  EXPECT_GT(plain.size(), 1u);
  EXPECT_EQ(tok->decode(plain), "<|eot_id|>");
  EXPECT_EQ(tok->token_text(9906), "Hello");
  EXPECT_EQ(tok->token_text(22691), "\xC4\xA0Hello");  // "ĠHello": the Hugging Face spelling
  EXPECT_EQ(tok->encode("Hello", true), (std::vector<int32_t>{128000, 9906}));
}

TEST(TokenizerBpe, DecodeRoundTrips) {
  const std::string gpt2 = shared_path(kDir + "ggml-vocab-gpt-2.gguf");
  const std::string llama3 = shared_path(kLlama3);
  if (!test::exists(gpt2) || !test::exists(llama3)) GTEST_SKIP() << "missing vocabularies";
  const auto cases = test::read_vocab_cases(shared_path(kDir + "ggml-vocab-gpt-2.gguf.inp"),
                                            shared_path(kDir + "ggml-vocab-gpt-2.gguf.out"));
  for (const std::string& path : {gpt2, llama3}) {
    const auto tok = load_tokenizer(path);
    for (const auto& c : cases) EXPECT_EQ(tok->decode(tok->encode(c.text, false)), c.text) << path;
    // Bytes that are not UTF-8 still round-trip: byte-level BPE spells every byte.
    const std::string bad = "ok \xFF\xFE x\xC3 \xE2\x82 end\x80";
    EXPECT_EQ(tok->decode(tok->encode(bad, false)), bad) << path;
    EXPECT_THROW(tok->decode_token(tok->vocab_size()), Error);
  }
}

std::vector<std::string> split(const Pretokenizer& pre, std::string_view text) {
  std::vector<std::string> out;
  for (auto piece : pre.split(text)) out.emplace_back(piece);
  return out;
}

using Pieces = std::vector<std::string>;

TEST(Pretokenizer, Presets) {
  const Pretokenizer gpt2(Pretokenizer::preset("gpt2"));
  EXPECT_EQ(split(gpt2, "Hello world's 12345  x"), (Pieces{"Hello", " world", "'s", " 12345", " ", " x"}));
  const Pretokenizer llama3(Pretokenizer::preset("llama3"));
  EXPECT_EQ(split(llama3, "Hello WORLD'S 12345\n\n x"),
            (Pieces{"Hello", " WORLD", "'S", " ", "123", "45", "\n\n", " x"}));
  const Pretokenizer qwen2(Pretokenizer::preset("qwen2"));
  EXPECT_EQ(split(qwen2, "a 123"), (Pieces{"a", " ", "1", "2", "3"}));
  // SmolLM2 (HF Sequence[Digits(individual_digits), ByteLevel]): each digit alone, and a space
  // before digits stays a piece of its own.
  const Pretokenizer smollm(Pretokenizer::preset("smollm"));
  EXPECT_EQ(split(smollm, "Hello world! 123"), (Pieces{"Hello", " world", "!", " ", "1", "2", "3"}));
  EXPECT_EQ(split(smollm, "x42y"), (Pieces{"x", "4", "2", "y"}));
  // \s is Unicode White_Space as in Hugging Face (Rust regex) and llama.cpp: U+0085 and U+3000 are
  // spaces, U+180E is not (PCRE2's own \s would take it). Expected pieces from HF tokenizers.
  EXPECT_EQ(split(gpt2, "a\u180Eb c\u0085 d"), (Pieces{"a", "\u180E", "b", " c", "\u0085", " d"}));
  EXPECT_EQ(split(llama3, "a\u180Eb c\u0085 d"), (Pieces{"a", "\u180Eb", " c", "\u0085", " d"}));
  EXPECT_EQ(split(llama3, "x \u180E\u180E y\u3000\u3000z"), (Pieces{"x", " \u180E\u180E", " y", "\u3000", "\u3000z"}));
  EXPECT_EQ(split(gpt2, "x \u180E\u180E y\u3000\u3000z"),
            (Pieces{"x", " \u180E\u180E", " y", "\u3000", "\u3000", "z"}));
  // A \s inside \Q...\E stays literal; inside a class it becomes the class's members.
  EXPECT_EQ(split(Pretokenizer({R"(\Q\s\E|[\s]+)"}), "a\\s  b"), (Pieces{"a", "\\s", "  ", "b"}));
  EXPECT_THROW(Pretokenizer::preset("no-such-preset"), Error);
  EXPECT_THROW(Pretokenizer({"(unclosed"}), Error);
  // Pieces always cover the text, even where no pattern matches and with invalid UTF-8.
  const std::string text = "\t\x01 \xFF\xFEz";
  std::string joined;
  for (auto p : llama3.split(text)) joined += p;
  EXPECT_EQ(joined, text);
  EXPECT_TRUE(Pretokenizer().split("").empty());
  EXPECT_EQ(split(Pretokenizer(), "a b"), (Pieces{"a b"}));
}

}  // namespace
}  // namespace qlora
