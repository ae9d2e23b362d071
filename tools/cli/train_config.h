// The `qlora train` configuration: a YAML file with flat, axolotl-style keys (base_model, method,
// lora_r, sequence_len, micro_batch_size, gradient_accumulation_steps, learning_rate, ...), every
// key overridable on the command line (`--lora_r 16`, `--datasets.0.path FILE`; dashes and
// underscores are interchangeable). Unknown keys, wrong types, missing files and impossible
// values are rejected with the key's name before any work starts.
// Tested in tests/e2e/test_cli_train.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "core/projections.h"
#include "train/train_data.h"

namespace qlora::cli {

using DatasetConfig = TrainDatasetSpec;

struct TrainRunConfig {
  // Model.
  std::string base_model;
  std::string tokenizer;           // default: the model's own
  std::string method = "qlora";    // full | lora | qlora
  std::string compute_dtype = "f32";  // f32 | bf16 | auto (bf16 where the backend has native bf16 units)
  // LoRA.
  int64_t lora_r = 8;
  double lora_alpha = 16;
  double lora_dropout = 0.05;
  bool use_rslora = false;
  std::vector<std::string> lora_target_modules = all_projection_names();
  // QLoRA base.
  std::string quant_type = "nf4";
  int64_t quant_block_size = 64;
  bool double_quant = true;
  // Data.
  std::vector<DatasetConfig> datasets;
  std::string chat_template = "auto";  // auto (the model's own, else chatml) | alpaca | chatml | ... | a .jinja file
  // Extra chat template variables (TRL's chat_template_kwargs), e.g. {enable_thinking: false}.
  nlohmann::json chat_template_kwargs = nlohmann::json::object();
  int64_t sequence_len = 512;
  bool sample_packing = true;
  bool train_on_inputs = false;
  bool parse_special_in_content = false;  // specials written in message content become control tokens
  double val_set_size = 0.05;          // < 1: fraction of the examples, >= 1: a count
  std::string val_dataset;             // a separate validation file instead of a split
  int64_t max_examples = 0;            // per dataset, 0 = all
  // Optimisation.
  int64_t micro_batch_size = 1;
  int64_t gradient_accumulation_steps = 4;
  int64_t max_steps = 0;               // 0: num_epochs over the training sequences
  double num_epochs = 1;
  double learning_rate = 2e-4;
  std::string lr_scheduler = "cosine";
  int64_t warmup_steps = 0;
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;
  std::string optimizer = "adamw";     // adamw | adamw8bit
  bool paged_optimizer = false;
  int64_t gradient_checkpointing = 0;  // 0 off, 1 every block (true), k every k-th block
  // Evaluation, samples, output.
  int64_t eval_steps = 0;              // 0: only before and after training
  int64_t save_steps = 0;
  int64_t save_total_limit = 0;        // keep the newest K checkpoints (HF's key); 0: all
  // A run stops with an error after this many non-finite (skipped) steps in a row; 0: never.
  int64_t max_consecutive_nonfinite_steps = 10;
  std::vector<std::string> sample_prompts;
  int64_t sample_max_tokens = 64;
  uint64_t seed = 42;
  std::string output_dir = "runs/qlora";
  int threads = 0;
  // Memory: "" checks the estimate against the machine's available memory; a size ("6GiB")
  // makes the run choose micro_batch_size and gradient_checkpointing to fit it (train/memory_budget.h).
  std::string memory_budget;
};

// Loads `path` (may be empty: defaults only), applies `overrides` (pairs of dotted key and YAML
// value text) and validates. Relative paths are relative to the working directory, as in axolotl.
TrainRunConfig load_train_config(const std::string& path, const std::vector<std::pair<std::string, std::string>>& overrides);
// The resolved configuration as YAML (what --dry-run prints and the run saves).
std::string train_config_yaml(const TrainRunConfig& config);

}  // namespace qlora::cli
