// Batch: B sequences of length T laid out row-major (B, T), as the model consumes them, with the
// targets already shifted (targets[b, t] = labels[b, t + 1], kIgnoreIndex at the last position and
// wherever the label is ignored), so the loss at row (b, t) is the prediction of token t + 1.
// Host arrays: the model copies them to its backend's device per call. Built by train/batch.h.
// Tested in tests/unit/test_batch.cpp.
#pragma once
#include <cstdint>
#include <vector>

namespace qlora {

struct Batch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> ids;           // (B, T)
  std::vector<int32_t> targets;       // (B, T) shifted labels, kIgnoreIndex = no loss
  std::vector<int64_t> position_ids;  // (B, T)
  std::vector<int32_t> segment_ids;   // (B, T) -1 on padding

  int64_t rows() const { return B * T; }
  int64_t target_count() const;  // rows with a target
};

}  // namespace qlora
