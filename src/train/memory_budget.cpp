// Budget decisions are searches over estimate_memory(): each candidate setting is estimated and
// compared with the budget; nothing here measures memory.
#include "train/memory_budget.h"

#include <fmt/core.h>

#include "core/memory.h"

namespace qlora {

std::optional<BudgetChoice> choose_for_budget(const LlamaConfig& config, const EstimateOptions& options,
                                              int64_t accumulation, size_t budget) {
  const int64_t sequences_per_step = options.batch * std::max<int64_t>(1, accumulation);
  for (bool checkpointing : {false, true}) {
    for (int64_t batch = options.batch; batch >= 1; --batch) {
      EstimateOptions o = options;
      o.batch = batch, o.checkpointing = checkpointing;
      MemoryEstimate m = estimate_memory(config, o);
      if (m.total > budget) continue;
      BudgetChoice c;
      c.micro_batch = batch, c.checkpointing = checkpointing;
      c.accumulation = (sequences_per_step + batch - 1) / batch;
      c.estimate = m;
      return c;
    }
  }
  return std::nullopt;
}

std::vector<FittingChange> changes_that_fit(const LlamaConfig& config, const EstimateOptions& options, size_t budget) {
  std::vector<FittingChange> out;
  auto consider = [&](const std::string& change, const EstimateOptions& o) {
    const size_t total = estimate_memory(config, o).total;
    if (total <= budget) out.push_back({change, total});
    return total <= budget;
  };
  EstimateOptions o = options;
  if (!options.checkpointing) {
    o.checkpointing = true;
    consider("gradient_checkpointing: true", o);
    o = options;
  }
  if (options.batch > 1) {
    o.batch = 1;
    consider("micro_batch_size: 1 (raise gradient_accumulation_steps to keep the batch)", o);
    o = options;
  }
  if (options.optimizer == "adamw") {
    o.optimizer = "paged";
    consider("paged_optimizer: true", o);
    o.optimizer = "adamw8bit";
    consider("optimizer: adamw8bit", o);
    o = options;
  }
  // The longest sequence, halving down to 128, that fits.
  for (int64_t seq = options.seq / 2; seq >= 128; seq /= 2) {
    o.seq = seq;
    if (consider(fmt::format("sequence_len: {}", seq), o)) break;
  }
  o = options;
  if (options.method != "qlora") {
    o.method = "qlora", o.precision = "";
    consider("method: qlora (a 4-bit base)", o);
    o = options;
  }
  if (out.empty()) {
    o.checkpointing = true, o.batch = 1;
    if (o.optimizer == "adamw") o.optimizer = "paged";
    if (o.method != "qlora") o.method = "qlora", o.precision = "";
    consider("all of: method qlora, gradient_checkpointing, micro_batch_size 1, paged optimizer", o);
  }
  return out;
}

std::string does_not_fit_message(const LlamaConfig& config, const EstimateOptions& options,
                                 const MemoryEstimate& estimate, size_t budget, const std::string& budget_source) {
  std::string out = fmt::format("this run needs about {} ({} at load) but {} is {}", format_bytes(estimate.total),
                                format_bytes(estimate.load_peak + estimate.overhead), budget_source,
                                format_bytes(budget));
  const std::vector<FittingChange> changes = changes_that_fit(config, options, budget);
  if (changes.empty()) {
    EstimateOptions o = options;
    o.method = "qlora", o.precision = "", o.checkpointing = true, o.batch = 1, o.seq = std::min<int64_t>(o.seq, 128);
    if (o.optimizer == "adamw") o.optimizer = "paged";
    return out + fmt::format(
                     "; nothing would fit: even QLoRA with checkpointing, micro-batch 1, the paged optimizer and "
                     "sequence_len {} needs {}",
                     o.seq, format_bytes(estimate_memory(config, o).total));
  }
  out += "; these would fit:";
  for (const FittingChange& c : changes) out += fmt::format("\n  {} (about {})", c.change, format_bytes(c.total));
  return out;
}

}  // namespace qlora
