// The training data of a run, from dataset files to packed sequences: each file encoded through the
// tokenizer and chat template (with the on-disk token cache), capped per file, split into train and
// validation (a fraction or a count of each file's examples, seeded; or a separate validation
// file), several files mixed by weight (multi-task mixing against catastrophic forgetting), then
// packed (or padded) to the sequence length. Bad records are counted and reported, never silently
// dropped. Tested in tests/e2e/test_cli_train.cpp and, piece by piece, tests/data/.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/example_encoder.h"
#include "data/packing.h"
#include "data/tokenizer.h"

namespace qlora {

struct TrainDatasetSpec {
  std::string path;
  std::string type = "auto";  // auto | alpaca | chat | text
  std::string fields;         // e.g. "instruction=question,output=answer"
  double weight = 1.0;        // mixing weight (multi-task)
};

struct TrainDataOptions {
  std::vector<TrainDatasetSpec> datasets;
  std::string val_dataset;   // a separate validation file (read as datasets[0] is) instead of a split
  double val_set_size = 0;   // < 1: a fraction of each file's examples, >= 1: a count
  int64_t max_examples = 0;  // per file, 0 = all
  int64_t sequence_len = 512;
  bool sample_packing = true;
  uint64_t seed = 0;
  std::string cache_dir;     // token cache ("" = none)
};

struct TrainData {
  std::vector<TrainSequence> train, validation;
  size_t train_examples = 0, validation_examples = 0;
  std::vector<std::string> warnings;  // e.g. "data.jsonl: skipped 3 bad records (first: line 7: ...)"
};

TrainData prepare_train_data(const TrainDataOptions& options, const Tokenizer& tokenizer,
                             const ExampleEncoder& encoder);

}  // namespace qlora
