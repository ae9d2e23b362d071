// Memory budget decisions (train/memory_budget.h) on the Llama-2-7B preset: the choice is the
// fastest candidate that fits (every faster one is over the budget), a budget nothing meets gives
// nullopt, and each suggested change really brings the estimate under the budget.
#include <gtest/gtest.h>

#include "train/memory_budget.h"

namespace qlora {
namespace {

EstimateOptions seven_b_qlora() {
  EstimateOptions o;
  o.method = "qlora";
  o.seq = 512;
  o.batch = 4;
  o.lora_r = 16;
  return o;
}

// The candidates in the order choose_for_budget tries them.
std::vector<std::pair<bool, int64_t>> candidates(int64_t batch) {
  std::vector<std::pair<bool, int64_t>> out;
  for (bool ckpt : {false, true})
    for (int64_t b = batch; b >= 1; --b) out.emplace_back(ckpt, b);
  return out;
}

TEST(MemoryBudget, ChoosesTheFastestSettingThatFits) {
  const LlamaConfig c = preset_config("llama-7b");
  const EstimateOptions o = seven_b_qlora();
  for (double gib : {64.0, 12.0, 8.0, 6.0, 5.0}) {
    SCOPED_TRACE(gib);
    const size_t budget = size_t(gib * double(1ull << 30));
    const auto choice = choose_for_budget(c, o, 2, budget);
    ASSERT_TRUE(choice.has_value());
    EXPECT_LE(choice->estimate.total, budget);
    // Sequences per optimizer step stay at least 4 x 2.
    EXPECT_GE(choice->micro_batch * choice->accumulation, 8);
    EXPECT_LT((choice->micro_batch) * (choice->accumulation - 1), 8);
    for (const auto& [ckpt, batch] : candidates(o.batch)) {
      if (ckpt == choice->checkpointing && batch == choice->micro_batch) break;
      EstimateOptions faster = o;
      faster.checkpointing = ckpt, faster.batch = batch;
      EXPECT_GT(estimate_memory(c, faster).total, budget) << "skipped a fitting faster setting: ckpt " << ckpt
                                                          << " batch " << batch;
    }
  }
  // A big budget keeps the configured settings.
  const auto roomy = choose_for_budget(c, o, 2, size_t(1) << 40);
  EXPECT_EQ(roomy->micro_batch, 4);
  EXPECT_FALSE(roomy->checkpointing);
  EXPECT_EQ(roomy->accumulation, 2);
  // Below the 4-bit base itself nothing fits.
  EXPECT_FALSE(choose_for_budget(c, o, 2, size_t(3) << 30).has_value());
}

TEST(MemoryBudget, SuggestedChangesFit) {
  const LlamaConfig c = preset_config("llama-7b");
  EstimateOptions o = seven_b_qlora();
  o.method = "lora";
  const size_t budget = size_t(6) << 30;
  ASSERT_GT(estimate_memory(c, o).total, budget);
  const std::vector<FittingChange> changes = changes_that_fit(c, o, budget);
  ASSERT_FALSE(changes.empty());
  for (const FittingChange& ch : changes) EXPECT_LE(ch.total, budget) << ch.change;
  const std::string message = does_not_fit_message(c, o, estimate_memory(c, o), budget, "memory_budget 6GiB");
  EXPECT_NE(message.find("memory_budget 6GiB is 6.00 GiB"), std::string::npos) << message;
  EXPECT_NE(message.find("qlora"), std::string::npos) << message;
  // Nothing fits in 1 GiB: the message says so and what the smallest run needs.
  const std::string none = does_not_fit_message(c, o, estimate_memory(c, o), size_t(1) << 30, "the available memory");
  EXPECT_NE(none.find("nothing would fit"), std::string::npos) << none;
}

}  // namespace
}  // namespace qlora
