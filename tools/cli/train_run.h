// One `qlora train` run end to end: data (encode, mix, split, pack), model (full | lora | qlora),
// validation loss and sample answers before training, the Trainer with a live progress line,
// metrics.jsonl, report.html, checkpoints (Ctrl-C saves one and exits cleanly), then validation
// and samples after training and the adapter (PEFT folder) or the fine-tuned model.
// Tested in tests/e2e/test_cli_train.cpp.
#pragma once
#include <string>

#include "train_config.h"

namespace qlora::cli {

struct TrainRunOptions {
  bool dry_run = false;      // print the resolved config and the memory estimate, then exit
  std::string resume;        // "" = fresh; "latest" = newest checkpoint in output_dir; else a checkpoint dir
  bool quiet = false;        // no progress line (tests)
  bool ignore_memory_check = false;  // run even when the estimate exceeds the budget (a warning)
  // One rank of an MPI job (`mpirun -np N qlora train CONFIG --distributed`): the ranks split each
  // step's micro-batches (train/trainer.h), rank 0 alone prints and writes the outputs.
  bool distributed = false;
};

void run_training(const TrainRunConfig& config, const TrainRunOptions& options);

}  // namespace qlora::cli
