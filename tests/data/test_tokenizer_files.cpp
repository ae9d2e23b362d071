// load_tokenizer's format dispatch, find_tokenizer_for_model's search beside a model, and clear
// errors ("[tokenizer] <path>: what; expected ...") for missing, empty, truncated and corrupt
// tokenizer files of every format. Uses ../shared models where present, scratch files otherwise.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "data/tokenizer.h"
#include "test_paths.h"
#include "tokenizer_test_util.h"
#include "vocab_vectors.h"

namespace qlora {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::shared_path;

const std::string kStoriesDir = "models/stories260K/";
const std::string kLlama2Model = "models/llama2-tokenizer/tokenizer.model";
const std::string kLlama3Model = "models/llama3-tokenizer/tokenizer.model";

// Expects Error whose message starts with "[tokenizer]" (or another module's tag) and contains
// every needle.
template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> needles, const std::string& tag = "[tokenizer]") {
  try {
    f();
    ADD_FAILURE() << "expected an Error containing " << *needles.begin();
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind(tag, 0), 0u) << what;
    for (const auto& n : needles) EXPECT_NE(what.find(n), std::string::npos) << "'" << n << "' not in: " << what;
  }
}

std::string gguf_without_vocab() {
  std::string g = "GGUF";
  const uint32_t version = 3;
  const uint64_t zero = 0;
  g.append(reinterpret_cast<const char*>(&version), 4);
  g.append(reinterpret_cast<const char*>(&zero), 8);  // tensors
  g.append(reinterpret_cast<const char*>(&zero), 8);  // metadata
  return g;
}

TEST(TokenizerFiles, MissingAndEmpty) {
  test::ScratchDir dir("qlora_tok_files_missing");
  expect_error([&] { load_tokenizer(dir.file("nope.model")); }, {"nope.model", "no such file", "expected"});
  test::write_file(dir.file("empty.model"), "");
  expect_error([&] { load_tokenizer(dir.file("empty.model")); }, {"empty.model", "empty file"});
  test::write_file(dir.file("garbage.model"), "\x01\x02garbage");
  expect_error([&] { load_tokenizer(dir.file("garbage.model")); }, {"garbage.model", "unknown tokenizer format"});
  expect_error([&] { find_tokenizer_for_model(dir.file("no-model.bin")); }, {"no-model.bin", "no such file"});
  // An empty folder: the error names every place it looked.
  expect_error([&] { find_tokenizer_for_model(dir.str()); },
               {"no tokenizer found", "tokenizer.json", "tokenizer.model"});
}

TEST(TokenizerFiles, CorruptLlama2cBin) {
  const std::string bin = shared_path(kStoriesDir + "tok512.bin");
  if (!test::exists(bin)) GTEST_SKIP() << "missing " << bin;
  const std::string data = test::read_all(bin);
  test::ScratchDir dir("qlora_tok_files_bin");
  test::write_file(dir.file("cut.bin"), data.substr(0, data.size() - 3));
  expect_error([&] { load_tokenizer(dir.file("cut.bin")); }, {"cut.bin", "token 511", "length"});
  test::write_file(dir.file("cut_header.bin"), data + std::string(5, '\0'));  // half a token header
  expect_error([&] { load_tokenizer(dir.file("cut_header.bin")); }, {"cut_header.bin", "truncated in token 512"});
  std::string bad = data;
  const int32_t minus_one = -1;
  std::memcpy(bad.data(), &minus_one, 4);
  test::write_file(dir.file("bad.bin"), bad);
  expect_error([&] { load_tokenizer(dir.file("bad.bin")); }, {"bad.bin", "max_token_length", "got -1"});
  test::write_file(dir.file("tiny.bin"), "ab");
  expect_error([&] { load_tokenizer(dir.file("tiny.bin")); }, {"tiny.bin", "too short"});
}

TEST(TokenizerFiles, CorruptSentencePieceModel) {
  const std::string model = shared_path(kLlama2Model);
  test::ScratchDir dir("qlora_tok_files_spm");
  if (test::exists(model)) {
    const std::string data = test::read_all(model);
    test::write_file(dir.file("cut.model"), data.substr(0, data.size() / 2));
    expect_error([&] { load_tokenizer(dir.file("cut.model")); }, {"cut.model", "corrupt SentencePiece model"});
  }
  // A well-formed unigram model: pieces {"a"}, trainer_spec {model_type: UNIGRAM}.
  const std::string piece = std::string("\x0A\x01", 2) + "a";
  const std::string unigram = std::string("\x0A") + char(piece.size()) + piece + std::string("\x12\x02\x18\x01", 4);
  test::write_file(dir.file("unigram.model"), unigram);
  expect_error([&] { load_tokenizer(dir.file("unigram.model")); }, {"unigram.model", "unigram", "expected 2 (BPE)"});
  test::write_file(dir.file("badtype.model"), std::string("\x0A\x02\x18\x09", 4));
  expect_error([&] { load_tokenizer(dir.file("badtype.model")); }, {"badtype.model", "piece type 9"});
}

TEST(TokenizerFiles, CorruptTiktoken) {
  test::ScratchDir dir("qlora_tok_files_tik");
  test::write_file(dir.file("a.model"), "IQ== 0\nIg== 1\n!!!! 2\n");
  expect_error([&] { load_tokenizer(dir.file("a.model")); }, {"a.model", "line 3", "expected '<base64> <rank>'"});
  test::write_file(dir.file("b.model"), "IQ== 0\nIg== 2\n");
  expect_error([&] { load_tokenizer(dir.file("b.model")); }, {"b.model", "rank 1 missing"});
  test::write_file(dir.file("c.model"), "IQ== 0\nIg== 0\n");
  expect_error([&] { load_tokenizer(dir.file("c.model")); }, {"c.model", "rank 0 appears twice"});
  // A valid small ranks file loads (no Llama 3 specials: it has not 128000 ranks).
  test::write_file(dir.file("ok.model"), "IQ== 0\nIg== 1\nISI= 2\n");
  const auto tok = load_tokenizer(dir.file("ok.model"));
  EXPECT_EQ(tok->vocab_size(), 3);
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_EQ(tok->encode("!\"!", false), (std::vector<int32_t>{2, 0}));
}

TEST(TokenizerFiles, GgufWithoutVocab) {
  test::ScratchDir dir("qlora_tok_files_gguf");
  test::write_file(dir.file("model.gguf"), gguf_without_vocab());
  expect_error([&] { load_tokenizer(dir.file("model.gguf")); }, {"model.gguf", "GGUF has no tokenizer"});
  expect_error([&] { find_tokenizer_for_model(dir.file("model.gguf")); },
               {"no tokenizer found", "no tokenizer.ggml", "tokenizer.json"});
  test::write_file(dir.file("cut.gguf"), "GGUF\x03");
  expect_error([&] { load_tokenizer(dir.file("cut.gguf")); }, {"cut.gguf"}, "[gguf]");
  // A tokenizer beside a vocab-less GGUF is found.
  const std::string llama2 = shared_path(kLlama2Model);
  if (test::exists(llama2)) {
    fs::create_symlink(llama2, dir.file("tokenizer.model"));
    EXPECT_EQ(find_tokenizer_for_model(dir.file("model.gguf"))->vocab_size(), 32000);
  }
}

TEST(TokenizerFiles, FindsTokenizerBesideModels) {
  const std::string stories = shared_path(kStoriesDir + "stories260K.bin");
  if (test::exists(stories)) {
    const auto tok = find_tokenizer_for_model(stories);  // tok512.bin beside it
    EXPECT_EQ(tok->vocab_size(), 512);
    EXPECT_EQ(tok->kind(), "spm");
    const auto in_gguf = find_tokenizer_for_model(shared_path(kStoriesDir + "tinyllamas-stories-260k-f32.gguf"));
    EXPECT_EQ(in_gguf->vocab_size(), 512);
    EXPECT_EQ(in_gguf->encode("Lily", true), tok->encode("Lily", true));
  }
  const std::string llama2 = shared_path(kLlama2Model), llama3 = shared_path(kLlama3Model);
  if (!test::exists(llama2) || !test::exists(llama3)) GTEST_SKIP() << "missing tokenizer models";
  test::ScratchDir dir("qlora_tok_files_find");
  // An HF-style folder: tokenizer.model (here Llama 3's tiktoken file) next to the weights.
  fs::create_symlink(llama3, dir.file("tokenizer.model"));
  test::write_file(dir.file("model.safetensors"), "");
  EXPECT_EQ(find_tokenizer_for_model(dir.str())->vocab_size(), 128256);
  EXPECT_EQ(find_tokenizer_for_model(dir.file("model.safetensors"))->vocab_size(), 128256);
  EXPECT_EQ(load_tokenizer(dir.str())->vocab_size(), 128256);
  // tokenizer.json comes first; a broken one falls back to tokenizer.model.
  test::write_file(dir.file("tokenizer.json"), "{ broken");
  EXPECT_EQ(find_tokenizer_for_model(dir.str())->vocab_size(), 128256);
  const json pre = {{"type", "ByteLevel"}};
  const std::string gpt2 = shared_path("data/llama-cpp-vocab-tests/ggml-vocab-gpt-2.gguf");
  if (test::exists(gpt2)) {
    test::write_file(dir.file("tokenizer.json"),
                     test::byte_level_json(GgufFile::open(gpt2), pre, nullptr, false, false).dump());
    EXPECT_EQ(find_tokenizer_for_model(dir.str())->vocab_size(), 50257);
  }
  // llama2.c layout: model.bin with tokenizer.bin beside it wins over tok*.bin.
  test::ScratchDir l2c("qlora_tok_files_l2c");
  test::write_file(l2c.file("model.bin"), "");
  fs::create_symlink(shared_path("models/llama2-tokenizer/tokenizer.bin"), l2c.file("tokenizer.bin"));
  if (test::exists(stories)) fs::create_symlink(shared_path(kStoriesDir + "tok512.bin"), l2c.file("tok512.bin"));
  EXPECT_EQ(find_tokenizer_for_model(l2c.file("model.bin"))->vocab_size(), 32000);
}

}  // namespace
}  // namespace qlora
