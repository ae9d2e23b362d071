// GGUF tokenizer metadata paths that the llama.cpp vocab files do not exercise, on GGUF files
// written here from those vocabularies: tokenizer.ggml.pre presets (smollm, qwen2, llama-bpe) must
// give the ids Hugging Face gives for the matching pre-tokenizers (golden/bpe_json_golden.json);
// an SPM vocab without token types still decodes byte tokens; unsupported or inconsistent
// metadata fails with a clear error. Skips when ../shared is absent.
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

std::vector<float> gguf_floats(const GgufFile& f, const std::string& key) {
  std::vector<float> out;
  for (const auto& v : f.get(key).as_array(key)) out.push_back(static_cast<float>(v.as_float(key)));
  return out;
}

template <typename F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected an Error containing " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(TokenizerGguf, PreTokenizerPresetsMatchHuggingFace) {
  const std::string gpt2 = shared_path(kDir + "ggml-vocab-gpt-2.gguf");
  if (!test::exists(gpt2)) GTEST_SKIP() << "missing " << gpt2;
  const GgufFile src = GgufFile::open(gpt2);
  const json golden = json::parse(test::read_all(test::source_path("tests/data/golden/bpe_json_golden.json")));
  const auto texts = golden.at("texts").get<std::vector<std::string>>();
  test::ScratchDir dir("qlora_tok_gguf_pre");
  // GGUF tokenizer.ggml.pre name -> the golden variant with the same pre-tokenizer.
  const std::pair<const char*, const char*> presets[] = {
      {"gpt-2", "gpt2"}, {"smollm", "smollm2"}, {"qwen2", "qwen2"}, {"llama-bpe", "llama3"}};
  for (const auto& [pre, variant] : presets) {
    test::GgufWriter w;
    w.add("tokenizer.ggml.model", "gpt2");
    w.add("tokenizer.ggml.pre", pre);
    w.add("tokenizer.ggml.tokens", test::gguf_strings(src, "tokenizer.ggml.tokens"));
    w.add("tokenizer.ggml.merges", test::gguf_strings(src, "tokenizer.ggml.merges"));
    w.add("tokenizer.ggml.eos_token_id", uint32_t{50256});
    const std::string path = dir.file(std::string(pre) + ".gguf");
    w.write(path);
    const auto tok = load_tokenizer(path);
    const json* ids = nullptr;
    for (const json& v : golden.at("variants")) {
      if (v.at("name") == variant) ids = &v.at("ids");
    }
    ASSERT_NE(ids, nullptr);
    int ok = 0;
    for (size_t i = 0; i < texts.size(); ++i) {
      const auto expected = ids->at(i).get<std::vector<int32_t>>();
      const auto got = tok->encode(texts[i], false);
      ok += got == expected;
      EXPECT_EQ(got, expected) << pre << ": '" << texts[i] << "'";
    }
    std::printf("[ match ] GGUF gpt2 vocab, tokenizer.ggml.pre=%s vs HF tokenizers (%s): %d/%zu\n", pre, variant, ok,
                texts.size());
    // Llama 3's pre-tokenizer comes with BOS by default, as in llama.cpp.
    EXPECT_EQ(tok->adds_bos(), std::string(pre) == "llama-bpe");
  }
}

TEST(TokenizerGguf, SpmWithoutTokenTypes) {
  const std::string spm = shared_path(kDir + "ggml-vocab-llama-spm.gguf");
  if (!test::exists(spm)) GTEST_SKIP() << "missing " << spm;
  const GgufFile src = GgufFile::open(spm);
  test::ScratchDir dir("qlora_tok_gguf_spm");
  test::GgufWriter w;
  w.add("tokenizer.ggml.model", "llama");
  w.add("tokenizer.ggml.tokens", test::gguf_strings(src, "tokenizer.ggml.tokens"));
  w.add("tokenizer.ggml.scores", gguf_floats(src, "tokenizer.ggml.scores"));
  w.write(dir.file("untyped.gguf"));
  const auto tok = load_tokenizer(dir.file("untyped.gguf"));
  EXPECT_EQ(tok->bos_id(), 1);  // llama.cpp's defaults for "llama"
  EXPECT_EQ(tok->eos_id(), 2);
  const auto cases = test::read_vocab_cases(shared_path(kDir + "ggml-vocab-llama-spm.gguf.inp"),
                                            shared_path(kDir + "ggml-vocab-llama-spm.gguf.out"));
  const int ok = test::count_matches(*tok, cases, "untyped");
  std::printf("[ match ] llama-spm GGUF without token types vs llama-spm vectors: %d/%zu\n", ok, cases.size());
  EXPECT_EQ(ok, static_cast<int>(cases.size()));
  for (const auto& c : cases) EXPECT_EQ(tok->decode(tok->encode(c.text, true), true), c.text);
}

TEST(TokenizerGguf, UnsupportedOrInconsistentMetadata) {
  test::ScratchDir dir("qlora_tok_gguf_bad");
  const std::vector<std::string> tokens = {"a", "b", "ab"};
  const auto write = [&](auto&& fill) {
    test::GgufWriter w;
    fill(w);
    w.write(dir.file("t.gguf"));
    return dir.file("t.gguf");
  };
  expect_error(
      [&] {
        load_tokenizer(write([&](auto& w) {
          w.add("tokenizer.ggml.model", "bert");
          w.add("tokenizer.ggml.tokens", tokens);
        }));
      },
      "tokenizer.ggml.model 'bert' is not supported");
  expect_error(
      [&] {
        load_tokenizer(write([&](auto& w) {
          w.add("tokenizer.ggml.model", "gpt2");
          w.add("tokenizer.ggml.pre", "deepseek-coder");
          w.add("tokenizer.ggml.tokens", tokens);
          w.add("tokenizer.ggml.merges", std::vector<std::string>{"a b"});
        }));
      },
      "tokenizer.ggml.pre 'deepseek-coder' is not supported");
  expect_error(
      [&] {
        load_tokenizer(write([&](auto& w) {
          w.add("tokenizer.ggml.model", "gpt2");
          w.add("tokenizer.ggml.tokens", tokens);
        }));
      },
      "no tokenizer.ggml.merges");
  expect_error(
      [&] {
        load_tokenizer(write([&](auto& w) {
          w.add("tokenizer.ggml.model", "llama");
          w.add("tokenizer.ggml.tokens", tokens);
          w.add("tokenizer.ggml.scores", std::vector<float>{0.0f, 0.0f});
        }));
      },
      "tokenizer.ggml.scores has 2 entries; expected 3");
  expect_error(
      [&] {
        load_tokenizer(write([&](auto& w) {
          w.add("tokenizer.ggml.model", "llama");
          w.add("tokenizer.ggml.tokens", tokens);
          w.add("tokenizer.ggml.bos_token_id", uint32_t{7});
        }));
      },
      "tokenizer.ggml.bos_token_id = 7; expected 0..2");
  // A two-token llama vocabulary without special-id keys: the default BOS 1 / EOS 2 would index
  // past it (a heap overflow before this was checked); now a clear error.
  expect_error(
      [&] {
        load_tokenizer(write([&](auto& w) {
          w.add("tokenizer.ggml.model", "llama");
          w.add("tokenizer.ggml.tokens", std::vector<std::string>{"a", "b"});
        }));
      },
      "tokenizer.ggml.eos_token_id is not set and its default 2 is past the vocabulary's 2 tokens");
  // A byte token that is not <0xNN> (std::stoi used to escape as "error: stoi").
  expect_error(
      [&] {
        load_tokenizer(write([&](auto& w) {
          w.add("tokenizer.ggml.model", "llama");
          w.add("tokenizer.ggml.tokens", std::vector<std::string>{"<unk>", "<s>", "</s>", "<0xZZ>"});
          w.add("tokenizer.ggml.token_type", std::vector<int32_t>{2, 3, 3, 6});
        }));
      },
      "token 3 '<0xZZ>' is a byte token but not <0xNN>");
  // A tiny consistent gpt2 vocabulary works: "ab" merges.
  const auto tok = load_tokenizer(write([&](auto& w) {
    w.add("tokenizer.ggml.model", "gpt2");
    w.add("tokenizer.ggml.pre", "gpt-2");
    w.add("tokenizer.ggml.tokens", tokens);
    w.add("tokenizer.ggml.merges", std::vector<std::string>{"a b"});
    w.add("tokenizer.ggml.token_type", std::vector<int32_t>{1, 1, 1});
  }));
  EXPECT_EQ(tok->encode("abba", false), (std::vector<int32_t>{2, 1, 0}));
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_THROW(tok->encode("c", false), Error);  // a byte with no token and no <unk>
}

}  // namespace
}  // namespace qlora
