// `qlora eval`, `qlora chat` and `--adapter` end to end on the real stories260K: eval --json on a
// small GSM8K-style file (loss, perplexity, accuracy fields; --compare-base equals a plain base run);
// chat on piped stdin (/reset gives the same greedy reply again, --prompt and generate --chat agree);
// generate --adapter with adapters written by the test (B = 0 changes nothing, a random one changes
// the text); a bad --adapter path exits non-zero naming the path.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_runner.h"
#include "core/rng.h"
#include "io/peft_adapter.h"
#include "test_paths.h"

namespace {

using qlora::test::RunResult;

const std::string kStories = qlora::test::shared_path("models/stories260K/stories260K.bin");
constexpr uint64_t kSeed = 424242;

RunResult run(const std::string& args, bool merge_stderr = true) { return qlora::test::run_cli(args, merge_stderr); }

std::string temp_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("qlora_test_eval_chat_" + std::to_string(getpid()) + "_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// A GSM8K-shaped file: question/answer with a "#### n" line.
std::string write_gsm8k(const std::string& dir) {
  const std::string path = dir + "/gsm8k_tiny.jsonl";
  write_file(path,
             R"({"question": "Tom has 2 cats and gets 3 more. How many cats does he have?", "answer": "2 + 3 = 5\n#### 5"})" "\n"
             R"({"question": "Lily had 10 apples and ate 4. How many are left?", "answer": "10 - 4 = 6\n#### 6"})" "\n"
             R"({"question": "A box holds 1,000 beads. How many beads are in 2 boxes?", "answer": "2 * 1000 = 2000\n#### 2,000"})" "\n");
  return path;
}

// A LoRA adapter on q_proj and v_proj of stories260K's 5 layers (C 64, Hkv*D 32), rank 2; B = 0
// when zero_b (PEFT's init: the adapter is then the identity).
std::string write_adapter(const std::string& dir, bool zero_b) {
  qlora::Rng rng(kSeed);
  auto random = [&](int64_t rows, int64_t cols, float amplitude) {
    qlora::Tensor t = qlora::Tensor::zeros({rows, cols});
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = amplitude * (2.0f * rng.uniform() - 1.0f);
    return t;
  };
  qlora::PeftAdapter a;
  a.config.r = 2;
  a.config.lora_alpha = 4;
  a.config.target_modules = {"q_proj", "v_proj"};
  a.config.base_model_name_or_path = "stories260K";
  for (int l = 0; l < 5; ++l) {
    const std::string base = "base_model.model.model.layers." + std::to_string(l) + ".self_attn.";
    a.tensors.emplace_back(base + "q_proj.lora_A.weight", random(2, 64, 0.5f));
    a.tensors.emplace_back(base + "q_proj.lora_B.weight", zero_b ? qlora::Tensor::zeros({64, 2}) : random(64, 2, 0.5f));
    a.tensors.emplace_back(base + "v_proj.lora_A.weight", random(2, 64, 0.5f));
    a.tensors.emplace_back(base + "v_proj.lora_B.weight", zero_b ? qlora::Tensor::zeros({32, 2}) : random(32, 2, 0.5f));
  }
  qlora::write_peft_adapter(dir, a);
  return dir;
}

}  // namespace

TEST(CliEval, JsonLossPerplexityAccuracy) {
  if (!qlora::test::exists(kStories)) GTEST_SKIP() << "no " << kStories;
  const std::string dir = temp_dir("eval");
  const std::string data = write_gsm8k(dir);
  const RunResult r = run("eval " + kStories + " --data " + data +
                              " --fields instruction=question,output=answer --template alpaca --generate 2"
                              " --max-new-tokens 8 --threads 1 --json",
                          false);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["datasets"].size(), 1u);
  const auto& base = j["datasets"][0]["base"];
  EXPECT_EQ(base["examples"], 3);
  EXPECT_GT(base["tokens"].get<int>(), 10);
  const double loss = base["loss"];
  EXPECT_TRUE(std::isfinite(loss) && loss > 0) << loss;
  EXPECT_NEAR(base["perplexity"].get<double>(), std::exp(loss), 1e-6 * std::exp(loss));
  EXPECT_EQ(base["generated"], 2);
  // A 260K-parameter story model cannot do arithmetic; the field is there and a valid fraction.
  EXPECT_GE(base["accuracy"].get<double>(), 0.0);
  EXPECT_LE(base["accuracy"].get<double>(), 1.0);

  // --compare-base with a zero-B adapter: both columns equal the plain base run, deltas zero;
  // --data2 adds a second dataset (plain alpaca fields, no accuracy).
  const std::string alpaca = dir + "/alpaca.json";
  write_file(alpaca, R"([{"instruction": "Say hi.", "input": "", "output": "Hi there!"}])");
  const std::string adapter = write_adapter(dir + "/zero_adapter", true);
  const RunResult c = run("eval " + kStories + " --adapter " + adapter + " --compare-base --data " + data +
                              " --data2 " + alpaca +
                              " --fields instruction=question,output=answer --template alpaca --generate 2"
                              " --max-new-tokens 8 --threads 1 --json",
                          false);
  ASSERT_EQ(c.exit_code, 0) << c.out;
  const auto k = nlohmann::json::parse(c.out);
  ASSERT_EQ(k["datasets"].size(), 2u);
  EXPECT_DOUBLE_EQ(k["datasets"][0]["base"]["loss"].get<double>(), loss);
  EXPECT_DOUBLE_EQ(k["datasets"][0]["adapter"]["loss"].get<double>(), loss);
  EXPECT_EQ(k["datasets"][0]["delta"]["loss"].get<double>(), 0.0);
  EXPECT_EQ(k["datasets"][0]["adapter"]["correct"], base["correct"]);
  EXPECT_TRUE(k["datasets"][1]["base"]["accuracy"].is_null());
  EXPECT_EQ(k["datasets"][1]["base"]["examples"], 1);

  // The text table names both columns and the delta.
  const RunResult t = run("eval " + kStories + " --adapter " + adapter + " --compare-base --data " + data +
                              " --fields instruction=question,output=answer --template alpaca --threads 1",
                          false);
  ASSERT_EQ(t.exit_code, 0) << t.out;
  EXPECT_NE(t.out.find("adapter"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("delta"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("perplexity"), std::string::npos) << t.out;
  std::filesystem::remove_all(dir);
}

TEST(CliChat, PipedStdinResetAndOneShot) {
  if (!qlora::test::exists(kStories)) GTEST_SKIP() << "no " << kStories;
  const std::string dir = temp_dir("chat");
  write_file(dir + "/in.txt", "Once upon a time\n/reset\nOnce upon a time\nwhat next?\n/exit\nnever read\n");
  const std::string common = " --template chatml --temperature 0 --max-tokens 12 --threads 1";
  const RunResult r = run("chat " + kStories + common + " < " + dir + "/in.txt", false);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // The one-shot reply; the piped session answers the same message with it twice (/reset in
  // between), then a third reply follows. Replies may hold newlines, so compare prefixes.
  const RunResult once = run("chat " + kStories + common + " --prompt 'Once upon a time'", false);
  ASSERT_EQ(once.exit_code, 0) << once.out;
  ASSERT_GT(once.out.size(), 1u);
  EXPECT_EQ(r.out.substr(0, 2 * once.out.size()), once.out + once.out)
      << "the same message after /reset must get the same greedy reply\n" << r.out;
  EXPECT_GT(r.out.size(), 2 * once.out.size()) << "no third reply";
  EXPECT_EQ(r.out.find("never read"), std::string::npos);
  const RunResult g = run("generate " + kStories + " --chat" + common + " --prompt 'Once upon a time'", false);
  ASSERT_EQ(g.exit_code, 0) << g.out;
  EXPECT_EQ(g.out, once.out);
  std::filesystem::remove_all(dir);
}

TEST(CliAdapter, GenerateWithAdapter) {
  if (!qlora::test::exists(kStories)) GTEST_SKIP() << "no " << kStories;
  const std::string dir = temp_dir("adapter");
  const std::string gen = "generate " + kStories + " --temperature 0 --max-tokens 40 --threads 1 --prompt 'Once'";
  const RunResult base = run(gen, false);
  ASSERT_EQ(base.exit_code, 0) << base.out;
  const RunResult zero = run(gen + " --adapter " + write_adapter(dir + "/zero", true), false);
  ASSERT_EQ(zero.exit_code, 0) << zero.out;
  EXPECT_EQ(zero.out, base.out) << "an adapter with B = 0 must not change the model";
  const RunResult random = run(gen + " --adapter " + write_adapter(dir + "/random", false), false);
  ASSERT_EQ(random.exit_code, 0) << random.out;
  EXPECT_NE(random.out, base.out) << "a random adapter must change greedy text";
  std::filesystem::remove_all(dir);
}

TEST(CliAdapter, BadAdapterPathFailsNamingIt) {
  if (!qlora::test::exists(kStories)) GTEST_SKIP() << "no " << kStories;
  const std::string missing = "/nonexistent/qlora_adapter_dir";
  for (const std::string& cmd : {"generate " + kStories + " --prompt hi -n 2", "chat " + kStories + " --prompt hi --template chatml",
                                 "perplexity " + kStories + " --data " + kStories}) {
    const RunResult r = run(cmd + " --adapter " + missing);
    EXPECT_NE(r.exit_code, 0) << cmd;
    EXPECT_NE(r.out.find(missing), std::string::npos) << cmd << "\n" << r.out;
  }
  // A folder without adapter files, and an adapter for another model (wrong shapes): both name the problem.
  const std::string dir = temp_dir("bad");
  const RunResult empty = run("generate " + kStories + " --prompt hi -n 2 --adapter " + dir);
  EXPECT_NE(empty.exit_code, 0);
  EXPECT_NE(empty.out.find(dir), std::string::npos) << empty.out;
  qlora::PeftAdapter wrong;
  wrong.config.r = 2;
  wrong.config.target_modules = {"q_proj"};
  wrong.tensors.emplace_back("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", qlora::Tensor::zeros({2, 576}));
  wrong.tensors.emplace_back("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", qlora::Tensor::zeros({576, 2}));
  qlora::write_peft_adapter(dir + "/wrong", wrong);
  const RunResult shapes = run("generate " + kStories + " --prompt hi -n 2 --adapter " + dir + "/wrong");
  EXPECT_NE(shapes.exit_code, 0);
  EXPECT_NE(shapes.out.find("q_proj.lora_A.weight"), std::string::npos) << shapes.out;
  std::filesystem::remove_all(dir);
}
