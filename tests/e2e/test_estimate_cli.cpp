// End-to-end tests of `qlora estimate`: the classic figures through the CLI (table and --json), a
// preset and a committed model folder (config only), and bad input exiting non-zero with an error
// that names the option. The estimator's arithmetic is tested in tests/unit/test_memory_estimate.cpp.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli_runner.h"

namespace qlora {
namespace {

nlohmann::json run_json(const std::string& args) {
  const test::RunResult r = test::run_cli("estimate " + args + " --json", /*merge_stderr=*/false);
  EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.out;
  try {
    return nlohmann::json::parse(r.out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not JSON for " << args << ": " << e.what() << "\n" << r.out;
    return {};
  }
}

TEST(EstimateCli, ClassicFiguresAsJson) {
  // 7B full fp32: 28 + 28 + 56 = 112 GB (the preset's nominal 7e9, as the tutorials count).
  nlohmann::json j = run_json("--preset llama-7b --method full --precision fp32 --textbook");
  EXPECT_EQ(j["weights"].get<uint64_t>(), 28'000'000'000u);
  EXPECT_EQ(j["gradients"].get<uint64_t>(), 28'000'000'000u);
  EXPECT_EQ(j["optimizer"].get<uint64_t>(), 56'000'000'000u);
  EXPECT_EQ(j["total"].get<uint64_t>(), 112'000'000'000u);
  j = run_json("--preset llama-13b --method full --textbook");
  EXPECT_EQ(j["total"].get<uint64_t>(), 208'000'000'000u);
  j = run_json("--params 10B --method full --precision fp16 --textbook");
  EXPECT_EQ(j["total"].get<uint64_t>(), 160'000'000'000u);
  j = run_json("--params 7B --method full --precision int8 --textbook");
  EXPECT_EQ(j["total"].get<uint64_t>(), 28'000'000'000u);
  for (const char* key : {"weights", "gradients", "optimizer", "adapters", "quant_constants", "activations",
                          "overhead", "total"})
    EXPECT_TRUE(j.contains(key)) << key;
}

TEST(EstimateCli, TableShowsEveryCategory) {
  const test::RunResult r = test::run_cli("estimate --preset llama-7b --method full --textbook");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const char* row : {"weights", "gradients", "optimizer", "adapters", "quant constants", "activations", "total"})
    EXPECT_NE(r.out.find(row), std::string::npos) << row << "\n" << r.out;
  EXPECT_NE(r.out.find("112.00"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("112000000000"), std::string::npos) << r.out;
}

TEST(EstimateCli, QloraPresetAndCheckpointing) {
  const nlohmann::json plain = run_json("--preset mistral-7b --method qlora --seq 1024");
  const nlohmann::json ckpt = run_json("--preset mistral-7b --method qlora --seq 1024 --checkpointing");
  EXPECT_GT(plain["quant_constants"].get<uint64_t>(), 0u);
  EXPECT_GT(plain["adapters"].get<uint64_t>(), 0u);
  EXPECT_LT(ckpt["activations"].get<uint64_t>(), plain["activations"].get<uint64_t>() / 4);
  EXPECT_EQ(ckpt["weights"], plain["weights"]);
  const nlohmann::json paged = run_json("--preset mixtral-8x7b --method qlora --optimizer paged");
  EXPECT_EQ(paged["parameters"].get<int64_t>(), 46'702'792'704);
  EXPECT_GT(paged["optimizer_spilled"].get<uint64_t>(), paged["optimizer"].get<uint64_t>());
}

// Data parallel replicates the model: the per-rank figures are the single process's, and the
// table says so.
TEST(EstimateCli, RanksGivePerRankFigures) {
  const nlohmann::json one = run_json("--preset llama-7b --method qlora");
  const nlohmann::json four = run_json("--preset llama-7b --method qlora --ranks 4");
  EXPECT_EQ(four["total"], one["total"]);
  EXPECT_EQ(four["ranks"], 4);
  EXPECT_EQ(four["per_rank"], true);
  const test::RunResult r = test::run_cli("estimate --preset llama-7b --method qlora --ranks 4");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("data parallel over 4 ranks: every rank needs the memory above"), std::string::npos) << r.out;
}

TEST(EstimateCli, ModelFolderReadsConfig) {
  const nlohmann::json j = run_json(test::source_path("tests/golden/fixtures/llama-gqa") + " --method lora --seq 16");
  EXPECT_GT(j["parameters"].get<int64_t>(), 0);
  EXPECT_GT(j["activations"].get<uint64_t>(), 0u);
}

TEST(EstimateCli, BadInputNamesTheOption) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--preset llama-70b", "--preset"},
      {"--preset llama-7b --method prefix", "--method"},
      {"--preset llama-7b --precision fp8", "--precision"},
      {"--preset llama-7b --optimizer sgd", "--optimizer"},
      {"--preset llama-7b --seq 0", "--seq"},
      {"--preset llama-7b --batch 0", "--batch"},
      {"--params 10B --method full", "--textbook"},
      {"--params ten --method full --textbook", "--params"},
      {"--preset llama-7b --ranks 0", "--ranks"},
      {"", "MODEL"},
  };
  for (const auto& [args, needle] : cases) {
    const test::RunResult r = test::run_cli("estimate " + args);
    EXPECT_NE(r.exit_code, 0) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
  }
}

}  // namespace
}  // namespace qlora
