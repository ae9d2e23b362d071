// make_batch: (B, T) layout, targets shifted by one with -100 at the last position, int64
// position ids, segment ids, both overloads, and the errors on ragged/empty/out-of-range input.
#include <gtest/gtest.h>

#include "io_test_util.h"
#include "train/batch.h"

namespace qlora {
namespace {

using test::expect_error;

// A sequence of length T whose values encode (sequence k, position t), so misplacement shows.
TrainSequence make_sequence(int k, int T) {
  TrainSequence s;
  for (int t = 0; t < T; ++t) {
    s.ids.push_back(100 * k + t);
    // Every third position ignored, like a prompt token.
    s.labels.push_back(t % 3 == 0 ? kIgnoreIndex : 1000 * k + t);
    s.position_ids.push_back(t < 2 ? t : t - 2);  // two packed examples: positions restart at 2
    s.segment_ids.push_back(t < 2 ? 0 : (t == T - 1 ? -1 : 1));
  }
  s.n_examples = 2;
  return s;
}

TEST(Batch, LayoutAndShiftedTargets) {
  const int T = 5;
  std::vector<TrainSequence> seqs;
  for (int k = 0; k < 4; ++k) seqs.push_back(make_sequence(k, T));

  const Batch b = make_batch(seqs, 1, 2);
  ASSERT_EQ(b.B, 2);
  ASSERT_EQ(b.T, T);
  ASSERT_EQ(b.rows(), 2 * T);
  ASSERT_EQ(b.ids.size(), size_t(2 * T));
  ASSERT_EQ(b.targets.size(), size_t(2 * T));
  ASSERT_EQ(b.position_ids.size(), size_t(2 * T));
  ASSERT_EQ(b.segment_ids.size(), size_t(2 * T));
  for (int row = 0; row < 2; ++row) {
    const TrainSequence& s = seqs[size_t(1 + row)];
    for (int t = 0; t < T; ++t) {
      const size_t i = size_t(row * T + t);
      EXPECT_EQ(b.ids[i], s.ids[size_t(t)]) << "row " << row << " t " << t;
      EXPECT_EQ(b.targets[i], t + 1 < T ? s.labels[size_t(t + 1)] : kIgnoreIndex) << "row " << row << " t " << t;
      EXPECT_EQ(b.position_ids[i], int64_t(s.position_ids[size_t(t)]));
      EXPECT_EQ(b.segment_ids[i], s.segment_ids[size_t(t)]);
    }
  }
  // Labels at t = 0, 3 are ignored: targets at t = 2 (label 3) and t = 4 (last) are -100, so per row
  // the targets are t = 0, 1, 3 -> 3 per row.
  EXPECT_EQ(b.target_count(), 6);
}

TEST(Batch, IndexListKeepsTheGivenOrder) {
  std::vector<TrainSequence> seqs;
  for (int k = 0; k < 5; ++k) seqs.push_back(make_sequence(k, 4));
  const Batch b = make_batch(seqs, std::vector<size_t>{3, 0, 3});
  ASSERT_EQ(b.B, 3);
  EXPECT_EQ(b.ids[0], 300);
  EXPECT_EQ(b.ids[4], 0);
  EXPECT_EQ(b.ids[8], 300);
  EXPECT_EQ(b.targets[1], 3002);
  EXPECT_EQ(b.targets[3], kIgnoreIndex);
}

TEST(Batch, TargetCountAllIgnored) {
  TrainSequence s = make_sequence(0, 3);
  for (auto& l : s.labels) l = kIgnoreIndex;
  EXPECT_EQ(make_batch({s}, 0, 1).target_count(), 0);
}

TEST(Batch, Errors) {
  std::vector<TrainSequence> seqs{make_sequence(0, 4), make_sequence(1, 5), make_sequence(2, 4)};
  expect_error([&] { make_batch(seqs, 0, 2); }, {"[batch]", "ragged", "5", "4"});
  expect_error([&] { make_batch(seqs, 0, 0); }, {"[batch]", "0 sequences"});
  expect_error([&] { make_batch(seqs, std::vector<size_t>{}); }, {"[batch]", "0 sequences"});
  expect_error([&] { make_batch(seqs, 2, 2); }, {"[batch]", "out of range"});
  expect_error([&] { make_batch(seqs, std::vector<size_t>{0, 7}); }, {"[batch]", "7", "out of range"});
  TrainSequence bad = make_sequence(3, 4);
  bad.labels.pop_back();
  seqs.push_back(bad);
  expect_error([&] { make_batch(seqs, std::vector<size_t>{0, 3}); }, {"[batch]", "labels"});
  std::vector<TrainSequence> empty{TrainSequence{}};
  expect_error([&] { make_batch(empty, 0, 1); }, {"[batch]", "empty"});
  // Fine when not ragged.
  EXPECT_NO_THROW(make_batch(seqs, std::vector<size_t>{0, 2}));
}

}  // namespace
}  // namespace qlora
