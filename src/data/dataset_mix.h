// Example order: seeded shuffling, a seeded train/validation split, and weighted mixing of several
// datasets (multi-task). All use qlora::Rng, so results are the same on every platform for a seed.
// Tested in tests/data/test_dataset_mix.cpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace qlora {

// 0..n-1 in a seeded random order (Fisher-Yates).
std::vector<size_t> shuffled_indices(size_t n, uint64_t seed);

struct SplitIndices {
  std::vector<size_t> train, validation;
};
// A seeded split: `validation` < 1 is a fraction of n (rounded), >= 1 a count. Throws Error for a
// negative value or a count above n.
SplitIndices split_indices(size_t n, double validation, uint64_t seed);

// `total` draws from datasets of the given sizes with probabilities proportional to `weights`
// (normalised; each must be >= 0, at least one > 0). Each draw is (dataset, index); within a
// dataset indices run through a seeded permutation, reshuffled when exhausted, so small datasets
// repeat evenly. Throws Error on a size/weight mismatch, a negative weight or an empty dataset with
// positive weight.
std::vector<std::pair<size_t, size_t>> mix_datasets(const std::vector<size_t>& sizes, const std::vector<double>& weights,
                                                    size_t total, uint64_t seed);

}  // namespace qlora
