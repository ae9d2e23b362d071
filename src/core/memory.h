// Process memory figures for reports and for checking the memory estimator against a real run:
// the resident set now and its peak (Linux /proc/self/status VmRSS / VmHWM; 0 where unavailable).
// Tested in tests/unit/test_memory.cpp.
#pragma once
#include <cstddef>

namespace qlora {

size_t current_rss_bytes();
size_t peak_rss_bytes();

}  // namespace qlora
