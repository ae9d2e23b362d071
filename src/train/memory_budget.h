// A training run against a memory budget, decided from the estimate before anything is loaded:
// the settings `--memory-budget` chooses (micro-batch size and gradient checkpointing), and, for a
// run that will not fit, the single changes that would make it fit, each with its estimate.
// Tested in tests/unit/test_memory_budget.cpp and tests/e2e/test_cli_train.cpp (the refusal).
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/config.h"
#include "train/memory_estimate.h"

namespace qlora {

struct BudgetChoice {
  int64_t micro_batch = 1;
  bool checkpointing = false;
  // Gradient accumulation that keeps the sequences per optimizer step (micro-batch x accumulation)
  // at least what the config asked for.
  int64_t accumulation = 1;
  MemoryEstimate estimate;
};

// The fastest settings whose estimate fits `budget` bytes: without checkpointing (it costs one more
// forward per block) at the largest micro-batch from options.batch down to 1, else with
// checkpointing likewise. Everything else in `options` is kept. nullopt when even micro-batch 1 with
// checkpointing does not fit.
std::optional<BudgetChoice> choose_for_budget(const LlamaConfig& config, const EstimateOptions& options,
                                              int64_t accumulation, size_t budget);

// One change to a run and its estimated total, e.g. {"gradient_checkpointing: true", 4.2e9}.
struct FittingChange {
  std::string change;
  size_t total = 0;
};
// The single changes (checkpointing; micro-batch 1; the paged or 8-bit optimizer; a shorter
// sequence; QLoRA instead of LoRA or full) whose estimate fits `budget`, smallest change first; and,
// when none does alone, all of them together if that fits.
std::vector<FittingChange> changes_that_fit(const LlamaConfig& config, const EstimateOptions& options, size_t budget);

// The refusal's text: the estimate against the budget, where the budget comes from, and what would
// fit (or that nothing would).
std::string does_not_fit_message(const LlamaConfig& config, const EstimateOptions& options,
                                 const MemoryEstimate& estimate, size_t budget, const std::string& budget_source);

}  // namespace qlora
