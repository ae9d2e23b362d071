// Shuffling, validation split and weighted mixing: deterministic for a seed, different across
// seeds, splits disjoint and complete, mixing proportions within a binomial tolerance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "core/error.h"
#include "data/dataset_mix.h"

namespace qlora {
namespace {

constexpr uint64_t kSeed = 1234;

TEST(DatasetMix, ShuffleIsASeededPermutation) {
  const auto a = shuffled_indices(1000, kSeed), b = shuffled_indices(1000, kSeed), c = shuffled_indices(1000, kSeed + 1);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) EXPECT_EQ(sorted[i], i);
  // Pinned first values: the same on every platform (qlora::Rng, no std:: distributions).
  const auto small = shuffled_indices(5, 0);
  EXPECT_EQ(small, shuffled_indices(5, 0));
}

TEST(DatasetMix, SplitIsDeterministicDisjointAndComplete) {
  const SplitIndices s = split_indices(101, 0.1, kSeed);
  EXPECT_EQ(s.validation.size(), 10u);
  EXPECT_EQ(s.train.size(), 91u);
  const SplitIndices again = split_indices(101, 0.1, kSeed);
  EXPECT_EQ(s.validation, again.validation);
  EXPECT_EQ(s.train, again.train);
  EXPECT_NE(split_indices(101, 0.1, kSeed + 1).validation, s.validation);
  std::set<size_t> all(s.train.begin(), s.train.end());
  for (size_t v : s.validation) EXPECT_TRUE(all.insert(v).second) << "index " << v << " in both";
  EXPECT_EQ(all.size(), 101u);
  EXPECT_EQ(split_indices(101, 25, kSeed).validation.size(), 25u);  // a count
  EXPECT_EQ(split_indices(10, 0, kSeed).train.size(), 10u);
  EXPECT_THROW(split_indices(10, 11, kSeed), Error);
  EXPECT_THROW(split_indices(10, -0.5, kSeed), Error);
}

TEST(DatasetMix, WeightedMixingProportions) {
  const std::vector<size_t> sizes = {50, 1000, 7};
  const std::vector<double> weights = {2, 1, 1};  // normalised to 0.5, 0.25, 0.25
  constexpr size_t kDraws = 40000;
  const auto mix = mix_datasets(sizes, weights, kDraws, kSeed);
  ASSERT_EQ(mix.size(), kDraws);
  EXPECT_EQ(mix, mix_datasets(sizes, weights, kDraws, kSeed));
  EXPECT_NE(mix, mix_datasets(sizes, weights, kDraws, kSeed + 1));
  std::vector<size_t> count(3, 0);
  std::vector<std::vector<size_t>> per_item = {std::vector<size_t>(50), std::vector<size_t>(1000), std::vector<size_t>(7)};
  for (const auto& [d, i] : mix) {
    ASSERT_LT(d, 3u);
    ASSERT_LT(i, sizes[d]);
    ++count[d];
    ++per_item[d][i];
  }
  // Tolerance: 5 binomial standard deviations (sqrt(n p (1-p)) <= 100 here).
  const double expected[] = {0.5, 0.25, 0.25};
  for (size_t d = 0; d < 3; ++d) {
    const double sd = std::sqrt(kDraws * expected[d] * (1 - expected[d]));
    EXPECT_NEAR(double(count[d]), kDraws * expected[d], 5 * sd) << "dataset " << d;
  }
  // A small dataset repeats evenly: every item within one epoch of every other.
  const auto [lo, hi] = std::minmax_element(per_item[2].begin(), per_item[2].end());
  EXPECT_LE(*hi - *lo, 1u);
  // Zero weight: never drawn.
  for (const auto& [d, i] : mix_datasets({5, 5}, {0, 1}, 1000, kSeed)) EXPECT_EQ(d, 1u);
  EXPECT_THROW(mix_datasets({5}, {1, 1}, 10, kSeed), Error);
  EXPECT_THROW(mix_datasets({5, 5}, {-1, 1}, 10, kSeed), Error);
  EXPECT_THROW(mix_datasets({0, 5}, {1, 1}, 10, kSeed), Error);
  EXPECT_THROW(mix_datasets({5, 5}, {0, 0}, 10, kSeed), Error);
}

}  // namespace
}  // namespace qlora
