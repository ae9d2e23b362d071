// Process memory figures: touching a 64 MiB buffer raises the resident set and its peak by about
// that much, and the peak never falls below the current figure; available memory is known on
// Linux; sizes parse with binary and decimal units.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "core/error.h"
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

TEST(Memory, AvailableMemoryIsKnownAndBelowTheMachine) {
  const size_t available = available_memory_bytes();
  ASSERT_GT(available, 0u) << "/proc/meminfo unreadable";
  // It can only shrink while we hold a touched block (other processes may take memory too).
  EXPECT_LT(available, size_t(1) << 50);
}

TEST(Memory, ParsesSizes) {
  EXPECT_EQ(parse_byte_size("6GiB"), 6ull << 30);
  EXPECT_EQ(parse_byte_size("6 GiB"), 6ull << 30);
  EXPECT_EQ(parse_byte_size("6g"), 6ull << 30);
  EXPECT_EQ(parse_byte_size("6GB"), 6'000'000'000ull);
  EXPECT_EQ(parse_byte_size("512MiB"), 512ull << 20);
  EXPECT_EQ(parse_byte_size("1.5G"), 3ull << 29);
  EXPECT_EQ(parse_byte_size("100kb"), 100'000ull);
  EXPECT_EQ(parse_byte_size("6442450944"), 6442450944ull);
  EXPECT_EQ(parse_byte_size("2TiB"), 2ull << 40);
  for (const char* bad : {"", "GiB", "6 parsecs", "-1G", "6GiBs", "nan"}) EXPECT_THROW(parse_byte_size(bad), Error) << bad;
  EXPECT_EQ(format_bytes(6ull << 30), "6.00 GiB");
  EXPECT_EQ(format_bytes(812ull << 20), "812 MiB");
}

}  // namespace
}  // namespace qlora
