// Sampling: greedy picks the first maximum, seeded sampling repeats, top-p restricts the support,
// temperature sharpens; token NLL equals -log softmax.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "core/error.h"
#include "model/perplexity.h"
#include "model/sampler.h"

using namespace qlora;

TEST(Sampler, GreedyTakesFirstMaximum) {
  const float logits[] = {0.5f, 2.0f, 2.0f, -1.0f};
  Sampler s({0.0f, 1.0f, 7});
  EXPECT_EQ(s.sample(logits, 4), 1);
}

TEST(Sampler, SeededRunsRepeatAndTopPRestricts) {
  const float logits[] = {3.0f, 2.0f, 1.0f, 0.0f, -1.0f};
  Sampler a({1.0f, 1.0f, 42}), b({1.0f, 1.0f, 42});
  std::map<int, int> counts;
  for (int i = 0; i < 2000; ++i) {
    const int x = a.sample(logits, 5);
    ASSERT_EQ(x, b.sample(logits, 5));
    ++counts[x];
  }
  // p(0) = e^3 / sum = 0.636; 2000 draws: std 0.011, so 0.58..0.69 is > 5 sigma either side.
  EXPECT_GT(counts[0], 1160);
  EXPECT_LT(counts[0], 1380);
  EXPECT_GT(counts[4], 0);
  // top-p 0.8: p sorted = 0.636, 0.234, ... -> keeps tokens 0 and 1 only.
  Sampler c({1.0f, 0.8f, 1});
  for (int i = 0; i < 500; ++i) EXPECT_LE(c.sample(logits, 5), 1);
}

TEST(Sampler, RejectsBadOptions) {
  EXPECT_THROW(Sampler({-1.0f, 1.0f, 0}), Error);
  EXPECT_THROW(Sampler({1.0f, 0.0f, 0}), Error);
  EXPECT_THROW(Sampler({1.0f, 1.5f, 0}), Error);
}

TEST(Perplexity, TokenNllIsNegativeLogSoftmax) {
  const float logits[] = {1.0f, 2.0f, 3.0f};
  const double denom = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  EXPECT_NEAR(token_nll(logits, 3, 0), -std::log(std::exp(1.0) / denom), 1e-9);
  EXPECT_NEAR(token_nll(logits, 3, 2), -std::log(std::exp(3.0) / denom), 1e-9);
  const float big[] = {1000.0f, 0.0f};  // stable for large logits
  EXPECT_NEAR(token_nll(big, 2, 0), 0.0, 1e-9);
}
