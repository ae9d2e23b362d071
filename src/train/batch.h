// Training sequences -> Batch (model/batch.h): B sequences of length T, targets shifted.
// Tested in tests/unit/test_batch.cpp.
#pragma once
#include <cstdint>
#include <vector>

#include "data/packing.h"
#include "model/batch.h"

namespace qlora {

// Sequences [begin, begin + count) of `sequences` (all of one length) as one batch.
// Throws Error on ragged lengths or an empty range.
Batch make_batch(const std::vector<TrainSequence>& sequences, size_t begin, size_t count);
// The same for an explicit list of sequence indices (a shuffled order).
Batch make_batch(const std::vector<TrainSequence>& sequences, const std::vector<size_t>& indices);

}  // namespace qlora
