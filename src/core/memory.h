// Process memory figures for reports and for checking the memory estimator against a real run:
// the resident set now and its peak (Linux /proc/self/status VmRSS / VmHWM; 0 where unavailable),
// and the memory a new run can still take, for the refusal before loading.
// Tested in tests/unit/test_memory.cpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace qlora {

size_t current_rss_bytes();
size_t peak_rss_bytes();

// What this process may still allocate without swapping or being killed: MemAvailable of
// /proc/meminfo, lowered to the cgroup's limit less its usage when the process runs in a
// memory-limited container (cgroup v2 memory.max, or v1 memory.limit_in_bytes). 0 where unknown.
size_t available_memory_bytes();

// "6GiB", "6 GB", "6g", "512MiB", "1.5G", "6442450944" -> bytes (K/M/G/T; KiB/MiB/... and the bare
// letters are powers of 1024, kB/MB/GB/TB powers of 1000). Throws Error naming the text otherwise.
uint64_t parse_byte_size(const std::string& text);
// Bytes as "5.72 GiB" / "812 MiB" for messages.
std::string format_bytes(uint64_t bytes);

}  // namespace qlora
