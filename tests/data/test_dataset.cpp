// Dataset readers: the real files in ../shared/data (Alpaca JSON, GSM8K JSONL through a field map,
// Alpaca seed tasks), chat JSONL in both spellings, plain-text chunks, bad records (strict error
// naming file and line, lenient counted skips), and a fuzz test that corrupts a valid JSONL file
// with seeded byte flips and truncations: the reader must throw qlora::Error or count skips.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "test_paths.h"
#include "tokenizer_test_util.h"

namespace qlora {
namespace {

using test::ScratchDir;
using test::shared_path;
using test::write_file;

TEST(Dataset, AlpacaJsonArray) {
  const std::string path = shared_path("data/alpaca_en_demo/alpaca_en_demo.json");
  if (!test::exists(path)) GTEST_SKIP() << path << " missing";
  DatasetStats stats;
  const auto examples = read_dataset(path, {}, &stats);
  ASSERT_GT(examples.size(), 100u);
  EXPECT_EQ(stats.skipped, 0u);
  EXPECT_EQ(examples[0].kind, Example::Kind::Instruction);
  EXPECT_EQ(examples[0].instruction, "Describe a process of making crepes.");
  EXPECT_TRUE(examples[0].input.empty());
  EXPECT_EQ(examples[0].output.rfind("Making crepes is an easy", 0), 0u);
}

TEST(Dataset, Gsm8kThroughFieldMap) {
  const std::string path = shared_path("data/gsm8k/test.jsonl");
  if (!test::exists(path)) GTEST_SKIP() << path << " missing";
  DatasetOptions opt;
  opt.fields = parse_field_map("instruction=question,output=answer");
  DatasetStats stats;
  const auto examples = read_dataset(path, opt, &stats);
  EXPECT_EQ(examples.size(), 1319u);
  EXPECT_EQ(stats.skipped, 0u);
  EXPECT_EQ(examples[0].instruction.rfind("Janet\u2019s ducks", 0), 0u);
  EXPECT_NE(examples[0].output.find("#### 18"), std::string::npos);
  EXPECT_EQ(examples[0].source, path + ":1");
  // Without the map every record lacks 'instruction': strict names file and line.
  DatasetOptions strict;
  strict.strict = true;
  try {
    read_dataset(path, strict);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":1: missing field 'instruction'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_field_map("question"), Error);
  EXPECT_THROW(parse_field_map("answer=output"), Error);
}

TEST(Dataset, SeedTasksGiveOneExamplePerInstance) {
  const std::string path = shared_path("data/alpaca_seed_tasks/seed_tasks.jsonl");
  if (!test::exists(path)) GTEST_SKIP() << path << " missing";
  DatasetStats stats;
  const auto examples = read_dataset(path, {}, &stats);
  EXPECT_GE(examples.size(), 175u);  // 175 tasks, some with several instances
  EXPECT_EQ(stats.skipped, 0u) << (stats.messages.empty() ? "" : stats.messages[0]);
  EXPECT_EQ(examples[0].output.rfind("Yes, you can have 1 oatmeal banana", 0), 0u);
}

TEST(Dataset, ChatFormats) {
  ScratchDir dir("qlora_dataset_chat");
  write_file(dir.file("chat.jsonl"),
             R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})"
             "\n\n"
             R"({"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]})"
             "\n");
  const auto examples = read_dataset(dir.file("chat.jsonl"), {});
  ASSERT_EQ(examples.size(), 2u);
  ASSERT_EQ(examples[0].messages.size(), 3u);
  EXPECT_EQ(examples[0].messages[0].role, "system");
  EXPECT_EQ(examples[1].kind, Example::Kind::Chat);
  EXPECT_EQ(examples[1].messages[0].role, "user");
  EXPECT_EQ(examples[1].messages[1].role, "assistant");
  EXPECT_EQ(examples[1].messages[1].content, "4");
  EXPECT_EQ(examples[1].source, dir.file("chat.jsonl") + ":3");
}

TEST(Dataset, BadRecordsAreCountedOrNamed) {
  ScratchDir dir("qlora_dataset_bad");
  const std::string path = dir.file("bad.jsonl");
  write_file(path,
             R"({"instruction": "a", "output": "b"})" "\n"
             R"({"instruction": "a", "output": )" "\n"                      // malformed
             R"({"instruction": "a"})" "\n"                                   // missing output
             R"({"instruction": 3, "output": "b"})" "\n"                      // wrong type
             R"({"instruction": "a", "output": "  "})" "\n"                   // empty output
             R"([1, 2])" "\n"                                                 // not an object
             R"({"messages": [{"role": "user", "content": "x"}]})" "\n"       // no assistant turn
             R"({"conversations": [{"from": "alien", "value": "x"}]})" "\n"   // unknown speaker
             R"({"instruction": "c", "input": "d", "output": "e"})" "\n");
  DatasetOptions opt;
  opt.max_messages = 3;
  DatasetStats stats;
  const auto examples = read_dataset(path, opt, &stats);
  ASSERT_EQ(examples.size(), 2u);
  EXPECT_EQ(examples[1].input, "d");
  EXPECT_EQ(stats.skipped, 7u);
  ASSERT_EQ(stats.messages.size(), 3u);
  EXPECT_NE(stats.messages[0].find(path + ":2: malformed JSON"), std::string::npos) << stats.messages[0];
  EXPECT_NE(stats.messages[1].find(path + ":3: missing field 'output'"), std::string::npos) << stats.messages[1];
  EXPECT_NE(stats.messages[2].find(path + ":4: field 'instruction' must be a string, got number"), std::string::npos)
      << stats.messages[2];
  opt.strict = true;
  try {
    read_dataset(path, opt);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":2: malformed JSON"), std::string::npos) << e.what();
  }
  write_file(dir.file("broken.json"), "[{\"instruction\": \"a\", ");
  EXPECT_THROW(read_dataset(dir.file("broken.json"), {}), Error);
  EXPECT_THROW(read_dataset(dir.file("missing.jsonl"), {}), Error);
}

TEST(Dataset, PlainTextChunksAtLineBreaks) {
  ScratchDir dir("qlora_dataset_text");
  std::string text;
  for (int i = 0; i < 200; ++i) text += fmt::format("line {} of the corpus, with ünïcödé\n", i);
  text += std::string(300, 'x');  // a long last line without a newline
  write_file(dir.file("corpus.txt"), text);
  DatasetOptions opt;
  opt.text_chunk_bytes = 256;
  const auto chunks = read_dataset(dir.file("corpus.txt"), opt);
  ASSERT_GT(chunks.size(), 20u);
  std::string joined;
  for (const auto& c : chunks) {
    EXPECT_EQ(c.kind, Example::Kind::Text);
    EXPECT_LE(c.text.size(), 256u);
    joined += c.text;
  }
  EXPECT_EQ(joined, text);
  EXPECT_EQ(chunks[0].text.back(), '\n');
}

// Seeded corruptions of a valid file: every outcome is examples + counted skips, or an Error
// (strict); never a crash or another exception type.
TEST(Dataset, FuzzCorruptedJsonl) {
  ScratchDir dir("qlora_dataset_fuzz");
  std::string valid;
  for (int i = 0; i < 40; ++i) {
    if (i % 3 == 0)
      valid += fmt::format(R"({{"messages": [{{"role": "user", "content": "q{}"}}, {{"role": "assistant", "content": "a\u00e9{}"}}]}})", i, i);
    else
      valid += fmt::format(R"({{"instruction": "do {}", "input": "", "output": "done {}"}})", i, i);
    valid += "\n";
  }
  const uint64_t seed = 20261123;
  std::printf("fuzz seed %llu\n", static_cast<unsigned long long>(seed));
  Rng rng(seed);
  const std::string path = dir.file("fuzz.jsonl");
  for (int round = 0; round < 300; ++round) {
    std::string data = valid;
    const int flips = 1 + int(rng.next_u64() % 8);
    for (int f = 0; f < flips; ++f) data[rng.next_u64() % data.size()] = char(rng.next_u64() & 0xFF);
    if (rng.next_u64() % 3 == 0) data.resize(rng.next_u64() % data.size());
    write_file(path, data);
    for (bool strict : {false, true}) {
      DatasetOptions opt;
      opt.strict = strict;
      try {
        DatasetStats stats;
        const auto examples = read_dataset(path, opt, &stats);
        EXPECT_EQ(examples.size(), stats.examples);
        EXPECT_LE(examples.size() + stats.skipped, 60u);
        if (strict) {
          EXPECT_EQ(stats.skipped, 0u);
        }
      } catch (const Error&) {
        // Lenient reading skips bad lines; only a file that now looks like a JSON array (parsed
        // whole, so nothing to skip to) may still fail.
        const size_t first = data.find_first_not_of(" \t\r\n");
        EXPECT_TRUE(strict || (first != std::string::npos && data[first] == '['))
            << "round " << round << ": lenient reading threw";
      } catch (const std::exception& e) {
        ADD_FAILURE() << "round " << round << ": unexpected exception " << e.what();
      }
    }
  }
}

}  // namespace
}  // namespace qlora
