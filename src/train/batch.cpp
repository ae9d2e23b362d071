// Training sequences -> a (B, T) Batch: ids copied, labels shifted left by one into targets (the
// row at t predicts token t + 1, as transformers' causal-LM loss shifts them), position ids widened
// to int64 for RoPE. Tested in tests/unit/test_batch.cpp.
#include "train/batch.h"

#include <algorithm>

#include "core/error.h"
#include "core/ignore_index.h"

namespace qlora {

Batch make_batch(const std::vector<TrainSequence>& sequences, const std::vector<size_t>& indices) {
  if (indices.empty()) fail("batch", "cannot make a batch of 0 sequences");
  for (size_t i : indices)
    if (i >= sequences.size())
      fail("batch", "sequence index {} out of range; expected < {}", i, sequences.size());

  const TrainSequence& first = sequences[indices[0]];
  const size_t T = first.ids.size();
  if (T == 0) fail("batch", "sequence {} is empty; expected at least one token", indices[0]);
  for (size_t i : indices) {
    const TrainSequence& s = sequences[i];
    if (s.ids.size() != T)
      fail("batch", "ragged batch: sequence {} has {} tokens; expected {} like sequence {} (pad or pack to "
                    "one length)",
           i, s.ids.size(), T, indices[0]);
    if (s.labels.size() != T || s.position_ids.size() != T || s.segment_ids.size() != T)
      fail("batch", "sequence {}: labels/position_ids/segment_ids have {}/{}/{} entries; expected {} each", i,
           s.labels.size(), s.position_ids.size(), s.segment_ids.size(), T);
  }

  Batch batch;
  batch.B = int64_t(indices.size());
  batch.T = int64_t(T);
  const size_t rows = indices.size() * T;
  batch.ids.resize(rows);
  batch.targets.resize(rows);
  batch.position_ids.resize(rows);
  batch.segment_ids.resize(rows);
  for (size_t b = 0; b < indices.size(); ++b) {
    const TrainSequence& s = sequences[indices[b]];
    const size_t base = b * T;
    std::copy(s.ids.begin(), s.ids.end(), batch.ids.begin() + ptrdiff_t(base));
    std::copy(s.segment_ids.begin(), s.segment_ids.end(), batch.segment_ids.begin() + ptrdiff_t(base));
    for (size_t t = 0; t < T; ++t) {
      batch.position_ids[base + t] = s.position_ids[t];
      // The last position has no next token to predict.
      batch.targets[base + t] = t + 1 < T ? s.labels[t + 1] : kIgnoreIndex;
    }
  }
  return batch;
}

Batch make_batch(const std::vector<TrainSequence>& sequences, size_t begin, size_t count) {
  if (count == 0) fail("batch", "cannot make a batch of 0 sequences");
  if (begin > sequences.size() || count > sequences.size() - begin)
    fail("batch", "sequences [{}, {}) out of range; there are {}", begin, begin + count, sequences.size());
  std::vector<size_t> indices(count);
  for (size_t i = 0; i < count; ++i) indices[i] = begin + i;
  return make_batch(sequences, indices);
}

}  // namespace qlora
