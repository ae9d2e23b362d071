// Process memory figures: touching a 64 MiB buffer raises the resident set and its peak by about
// that much, and the peak never falls below the current figure.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "core/memory.h"

namespace qlora {
namespace {

TEST(Memory, ResidentSetGrowsWithTouchedMemory) {
  const size_t before = current_rss_bytes();
  ASSERT_GT(before, 0u) << "/proc/self/status unreadable";
  constexpr size_t kBytes = size_t(64) << 20;
  std::vector<char> block(kBytes);
  std::memset(block.data(), 1, kBytes);
  const size_t after = current_rss_bytes();
  // The allocator and page granularity add a little; 90% of the touched bytes must show up.
  EXPECT_GE(after, before + kBytes * 9 / 10);
  EXPECT_GE(peak_rss_bytes(), after);
  EXPECT_EQ(block[kBytes - 1], 1);
}

}  // namespace
}  // namespace qlora
