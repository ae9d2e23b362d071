// Hugging Face tokenizer.json loading. Byte-level: tokenizer.json files built from the GPT-2 GGUF
// vocabulary with the pre-tokenizers of GPT-2, SmolLM2, Qwen2 and Llama 3 must give the ids that
// Hugging Face `tokenizers` gives (golden/bpe_json_golden.json, made by
// golden/make_bpe_json_golden.py), and the GPT-2 one llama.cpp's gpt-2 vectors. SentencePiece-style:
// a Llama 2 layout tokenizer.json built from the llama-spm GGUF must give llama.cpp's llama-spm ids.
// Also tokenizer_config.json specials. Skips when ../shared is absent.
#include <gtest/gtest.h>

#include <cstdio>

#include "core/error.h"
#include "data/tokenizer.h"
#include "test_paths.h"
#include "tokenizer_test_util.h"
#include "vocab_vectors.h"

namespace qlora {
namespace {

using nlohmann::json;
using test::shared_path;

const std::string kDir = "data/llama-cpp-vocab-tests/";

TEST(TokenizerJson, ByteLevelMatchesHuggingFaceGolden) {
  const std::string gguf = shared_path(kDir + "ggml-vocab-gpt-2.gguf");
  if (!test::exists(gguf)) GTEST_SKIP() << "missing " << gguf;
  const GgufFile f = GgufFile::open(gguf);
  const json golden = json::parse(test::read_all(test::source_path("tests/data/golden/bpe_json_golden.json")));
  const auto texts = golden.at("texts").get<std::vector<std::string>>();
  test::ScratchDir dir("qlora_tok_json");
  for (const json& v : golden.at("variants")) {
    const std::string name = v.at("name").get<std::string>();
    for (bool pair_merges : {false, true}) {
      const std::string path = dir.file(name + (pair_merges ? "_pairs" : "") + ".json");
      test::write_file(path, test::byte_level_json(f, v.at("pre_tokenizer"), v.at("normalizer"),
                                                   v.at("ignore_merges").get<bool>(), pair_merges)
                                 .dump());
      const auto tok = load_tokenizer(path);
      ASSERT_EQ(tok->kind(), "bpe");
      int ok = 0;
      for (size_t i = 0; i < texts.size(); ++i) {
        const auto expected = v.at("ids").at(i).get<std::vector<int32_t>>();
        const auto got = tok->encode(texts[i], false);
        ok += got == expected;
        EXPECT_EQ(got, expected) << name << ": '" << texts[i] << "'";
        EXPECT_EQ(tok->decode(got), texts[i]) << name;
      }
      std::printf("[ match ] tokenizer.json gpt2 vocab + %s pre-tokenizer (%s merges) vs HF tokenizers: %d/%zu\n",
                  name.c_str(), pair_merges ? "pair" : "string", ok, texts.size());
    }
  }
}

TEST(TokenizerJson, Gpt2JsonMatchesLlamaCppVectors) {
  const std::string gguf = shared_path(kDir + "ggml-vocab-gpt-2.gguf");
  if (!test::exists(gguf)) GTEST_SKIP() << "missing " << gguf;
  test::ScratchDir dir("qlora_tok_json_gpt2");
  const json pre = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  test::write_file(dir.file("tokenizer.json"),
                   test::byte_level_json(GgufFile::open(gguf), pre, nullptr, false, false).dump());
  const auto tok = load_tokenizer(dir.file("tokenizer.json"));
  const auto cases = test::read_vocab_cases(shared_path(kDir + "ggml-vocab-gpt-2.gguf.inp"),
                                            shared_path(kDir + "ggml-vocab-gpt-2.gguf.out"));
  std::vector<std::string> mismatches;
  const int ok = test::count_matches(*tok, cases, "gpt-2 tokenizer.json", &mismatches);
  std::printf("[ match ] gpt-2 tokenizer.json vs gpt-2 vectors: %d/%zu\n", ok, cases.size());
  for (const auto& m : mismatches) ADD_FAILURE() << m;
  EXPECT_EQ(tok->eos_id(), 50256);  // found by name: no tokenizer_config.json
  EXPECT_FALSE(tok->adds_bos());

  // tokenizer_config.json beside it names BOS/EOS/PAD and asks for BOS.
  test::write_file(dir.file("tokenizer_config.json"),
                   R"({"bos_token": {"content": "<|endoftext|>"}, "eos_token": "<|endoftext|>",
                       "pad_token": "<|endoftext|>", "add_bos_token": true})");
  const auto tok2 = load_tokenizer(dir.file("tokenizer.json"));
  EXPECT_EQ(tok2->bos_id(), 50256);
  EXPECT_EQ(tok2->pad_id(), 50256);
  EXPECT_TRUE(tok2->adds_bos());
  EXPECT_EQ(tok2->encode("Hello", true), (std::vector<int32_t>{50256, 15496}));
  // The added special token is matched in text.
  EXPECT_EQ(tok2->encode("a<|endoftext|>b", false), (std::vector<int32_t>{64, 50256, 65}));
}

TEST(TokenizerJson, SentencePieceStyleMatchesLlamaCppVectors) {
  const std::string gguf = shared_path(kDir + "ggml-vocab-llama-spm.gguf");
  if (!test::exists(gguf)) GTEST_SKIP() << "missing " << gguf;
  test::ScratchDir dir("qlora_tok_json_spm");
  test::write_file(dir.file("tokenizer.json"), test::sentencepiece_json(GgufFile::open(gguf)).dump());
  const auto tok = load_tokenizer(dir.file("tokenizer.json"));
  EXPECT_EQ(tok->kind(), "spm");
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_TRUE(tok->adds_bos());
  const auto cases = test::read_vocab_cases(shared_path(kDir + "ggml-vocab-llama-spm.gguf.inp"),
                                            shared_path(kDir + "ggml-vocab-llama-spm.gguf.out"));
  std::vector<std::string> mismatches;
  const int ok = test::count_matches(*tok, cases, "llama-spm tokenizer.json", &mismatches);
  std::printf("[ match ] SentencePiece-style tokenizer.json (merges by rank) vs llama-spm vectors: %d/%zu\n", ok,
              cases.size());
  for (const auto& m : mismatches) ADD_FAILURE() << m;
  for (const auto& c : cases) EXPECT_EQ(tok->decode(tok->encode(c.text, false)), c.text);
}

// SentencePiece-style tokenizer.json layouts (legacy Prepend/Replace, Metaspace "first", Metaspace
// "always" with split) against Hugging Face `tokenizers` on the same files.
TEST(TokenizerJson, SentencePieceLayoutsMatchHuggingFaceGolden) {
  const std::string gguf = shared_path(kDir + "ggml-vocab-llama-spm.gguf");
  if (!test::exists(gguf)) GTEST_SKIP() << "missing " << gguf;
  const GgufFile f = GgufFile::open(gguf);
  const json golden = json::parse(test::read_all(test::source_path("tests/data/golden/bpe_json_golden.json")));
  const auto texts = golden.at("spm_texts").get<std::vector<std::string>>();
  test::ScratchDir dir("qlora_tok_json_spm_layouts");
  for (const json& v : golden.at("spm_variants")) {
    const std::string name = v.at("name").get<std::string>();
    const std::string path = dir.file(name + ".json");
    test::write_file(path, test::sentencepiece_json(f, &v.at("normalizer"), &v.at("pre_tokenizer")).dump());
    const auto tok = load_tokenizer(path);
    ASSERT_EQ(tok->kind(), "spm");
    int ok = 0;
    for (size_t i = 0; i < texts.size(); ++i) {
      const auto expected = v.at("ids").at(i).get<std::vector<int32_t>>();
      const auto got = tok->encode(texts[i], false);
      ok += got == expected;
      EXPECT_EQ(got, expected) << name << ": '" << texts[i] << "'";
    }
    std::printf("[ match ] tokenizer.json llama-spm vocab, %s layout vs HF tokenizers: %d/%zu\n", name.c_str(), ok,
                texts.size());
  }
}

TEST(TokenizerJson, RejectsWhatItCannotRun) {
  test::ScratchDir dir("qlora_tok_json_bad");
  const auto expect_error = [&](const std::string& body, const std::string& needle) {
    const std::string path = dir.file("tokenizer.json");
    test::write_file(path, body);
    try {
      load_tokenizer(path);
      ADD_FAILURE() << "no error for " << body;
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("[tokenizer]"), std::string::npos) << what;
      EXPECT_NE(what.find(needle), std::string::npos) << what;
    }
  };
  expect_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {", "not valid JSON");
  expect_error(R"({"model": {"type": "Unigram", "vocab": []}})", "expected BPE");
  expect_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})", "neither ByteLevel nor Metaspace");
  expect_error(R"({"pre_tokenizer": {"type": "Whitespace"}, "model": {"type": "BPE", "vocab": {"a": 0}}})",
               "'Whitespace' is not supported");
  expect_error(R"({"pre_tokenizer": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": -3}}})",
               "has id -3");
  expect_error(
      R"({"pre_tokenizer": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": [7]}})",
      "malformed");
  expect_error(R"({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(oops"}, "behavior": "Isolated"},
                   "decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": 0}}})",
               "bad pre-tokenizer regex");
}

}  // namespace
}  // namespace qlora
