// Packing and padding: every example appears once, in order, with position ids restarting at 0
// and its own segment id, so no attention crosses examples; padding is never labelled; the first
// label of every packed example after the first is ignored; over-long examples are rejected.
#include <gtest/gtest.h>

#include "core/error.h"
#include "data/packing.h"

namespace qlora {
namespace {

EncodedExample make(int32_t first, size_t n) {
  EncodedExample e;
  for (size_t i = 0; i < n; ++i) {
    e.ids.push_back(first + int32_t(i));
    e.labels.push_back(i == 0 ? kIgnoreIndex : first + int32_t(i));
  }
  return e;
}

TEST(Packing, PacksInOrderWithSegmentsAndPositions) {
  const std::vector<EncodedExample> ex = {make(100, 3), make(200, 4), make(300, 5), make(400, 2)};
  constexpr int32_t kPad = 7;
  const auto seqs = pack_examples(ex, 8, kPad);
  ASSERT_EQ(seqs.size(), 2u);  // [3+4 | pad], [5+2 | pad]
  EXPECT_EQ(seqs[0].n_examples, 2);
  EXPECT_EQ(seqs[1].n_examples, 2);
  EXPECT_EQ(seqs[0].ids, (std::vector<int32_t>{100, 101, 102, 200, 201, 202, 203, kPad}));
  EXPECT_EQ(seqs[0].position_ids, (std::vector<int32_t>{0, 1, 2, 0, 1, 2, 3, 0}));
  EXPECT_EQ(seqs[0].segment_ids, (std::vector<int32_t>{0, 0, 0, 1, 1, 1, 1, -1}));
  EXPECT_EQ(seqs[0].labels, (std::vector<int32_t>{kIgnoreIndex, 101, 102, kIgnoreIndex, 201, 202, 203, kIgnoreIndex}));
  EXPECT_EQ(seqs[1].ids, (std::vector<int32_t>{300, 301, 302, 303, 304, 400, 401, kPad}));
  // No attention crosses examples; causal within one; padding attends to nothing.
  const TrainSequence& s = seqs[0];
  for (size_t q = 0; q < 8; ++q)
    for (size_t k = 0; k < 8; ++k) {
      const bool same = s.segment_ids[q] >= 0 && s.segment_ids[q] == s.segment_ids[k];
      EXPECT_EQ(s.can_attend(q, k), same && k <= q) << q << "," << k;
    }
  EXPECT_FALSE(s.can_attend(3, 2));  // first token of example 1 cannot see example 0
}

TEST(Packing, FirstLabelOfAPackedExampleIsIgnored) {
  EncodedExample a = make(10, 2), b = make(20, 2);
  b.labels[0] = 20;  // train_on_inputs without BOS: the first token has a label of its own
  const auto seqs = pack_examples({a, b}, 4, 0);
  ASSERT_EQ(seqs.size(), 1u);
  EXPECT_EQ(seqs[0].labels, (std::vector<int32_t>{kIgnoreIndex, 11, kIgnoreIndex, 21}));
}

TEST(Packing, PaddingKeepsOneExamplePerSequence) {
  const auto seqs = pad_examples({make(1, 3), make(5, 1)}, 4, 9);
  ASSERT_EQ(seqs.size(), 2u);
  EXPECT_EQ(seqs[0].ids, (std::vector<int32_t>{1, 2, 3, 9}));
  EXPECT_EQ(seqs[0].labels, (std::vector<int32_t>{kIgnoreIndex, 2, 3, kIgnoreIndex}));
  EXPECT_EQ(seqs[1].segment_ids, (std::vector<int32_t>{0, -1, -1, -1}));
  EXPECT_THROW(pad_examples({make(1, 5)}, 4, 0), Error);
  EXPECT_THROW(pack_examples({make(1, 5)}, 4, 0), Error);
  EXPECT_THROW(pack_examples({make(1, 1)}, 0, 0), Error);
}

TEST(Packing, EveryTokenOnceOverManyExamples) {
  std::vector<EncodedExample> ex;
  size_t total = 0;
  for (int i = 0; i < 100; ++i) {
    ex.push_back(make(i * 1000, size_t(1 + (i * 37) % 60)));
    total += ex.back().ids.size();
  }
  const auto seqs = pack_examples(ex, 64, -1);
  size_t tokens = 0, examples = 0;
  std::vector<int32_t> flat;
  for (const auto& s : seqs) {
    ASSERT_EQ(s.ids.size(), 64u);
    examples += size_t(s.n_examples);
    for (size_t t = 0; t < 64; ++t)
      if (s.segment_ids[t] >= 0) flat.push_back(s.ids[t]), ++tokens;
  }
  EXPECT_EQ(tokens, total);
  EXPECT_EQ(examples, ex.size());
  std::vector<int32_t> expected;
  for (const auto& e : ex) expected.insert(expected.end(), e.ids.begin(), e.ids.end());
  EXPECT_EQ(flat, expected);
}

}  // namespace
}  // namespace qlora
