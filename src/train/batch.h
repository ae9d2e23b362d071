// Batch: B training sequences of length T laid out row-major (B, T), as the model consumes them,
// with the targets already shifted (targets[b, t] = labels[b, t + 1], -100 at the last position
// and wherever the label is ignored), so the loss at row (b, t) is the prediction of token t + 1.
// Tested in tests/unit/test_batch.cpp.
#pragma once
#include <cstdint>
#include <vector>

#include "data/packing.h"

namespace qlora {

struct Batch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> ids;           // (B, T)
  std::vector<int32_t> targets;       // (B, T) shifted labels, -100 = no loss
  std::vector<int64_t> position_ids;  // (B, T)
  std::vector<int32_t> segment_ids;   // (B, T) -1 on padding

  int64_t rows() const { return B * T; }
  int64_t target_count() const;  // rows with a target
};

// Sequences [begin, begin + count) of `sequences` (all of one length) as one batch.
// Throws Error on ragged lengths or an empty range.
Batch make_batch(const std::vector<TrainSequence>& sequences, size_t begin, size_t count);
// The same for an explicit list of sequence indices (a shuffled order).
Batch make_batch(const std::vector<TrainSequence>& sequences, const std::vector<size_t>& indices);

}  // namespace qlora
