// Reads VmRSS / VmHWM from /proc/self/status and MemAvailable from /proc/meminfo (kB values), and
// the cgroup's limit and usage from /sys/fs/cgroup.
#include "core/memory.h"

#include <fmt/core.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "core/error.h"

namespace qlora {

namespace {

size_t status_kb(const char* key, const char* file = "/proc/self/status") {
  FILE* f = std::fopen(file, "r");
  if (!f) return 0;
  char line[256];
  size_t kb = 0;
  const size_t key_len = std::strlen(key);
  while (std::fgets(line, sizeof line, f)) {
    if (std::strncmp(line, key, key_len) == 0 && line[key_len] == ':') {
      std::sscanf(line + key_len + 1, "%zu", &kb);
      break;
    }
  }
  std::fclose(f);
  return kb;
}

// A number in a cgroup file; 0 when absent or "max" (no limit).
uint64_t cgroup_value(const char* path) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text) || text == "max") return 0;
  try {
    return std::stoull(text);
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace

size_t current_rss_bytes() { return status_kb("VmRSS") * 1024; }
size_t peak_rss_bytes() { return status_kb("VmHWM") * 1024; }

size_t available_memory_bytes() {
  uint64_t available = uint64_t(status_kb("MemAvailable", "/proc/meminfo")) * 1024;
  struct Limit {
    const char *max, *current;
  };
  for (const Limit& l : {Limit{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"},
                         Limit{"/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"}}) {
    const uint64_t limit = cgroup_value(l.max);
    // v1 reports "no limit" as a huge page-rounded number.
    if (limit == 0 || limit >= (uint64_t(1) << 60)) continue;
    const uint64_t used = cgroup_value(l.current);
    const uint64_t left = limit > used ? limit - used : 0;
    available = available ? std::min(available, left) : left;
    break;
  }
  return size_t(available);
}

uint64_t parse_byte_size(const std::string& text) {
  size_t pos = 0;
  double value = 0;
  try {
    value = std::stod(text, &pos);
  } catch (const std::exception&) {
    fail("config", "'{}' is not a size; expected e.g. 6GiB, 512MiB or a byte count", text);
  }
  std::string unit;
  for (char ch : text.substr(pos))
    if (!std::isspace(static_cast<unsigned char>(ch))) unit += char(std::tolower(static_cast<unsigned char>(ch)));
  double scale = 0;
  if (unit.empty() || unit == "b") scale = 1;
  static const std::string kLetters = "kmgt";
  for (size_t i = 0; i < kLetters.size(); ++i) {
    const std::string letter(1, kLetters[i]);
    if (unit == letter || unit == letter + "ib") scale = std::pow(1024.0, double(i + 1));
    if (unit == letter + "b") scale = std::pow(1000.0, double(i + 1));
  }
  if (scale == 0 || !(value >= 0) || !std::isfinite(value))
    fail("config", "'{}' is not a size; expected e.g. 6GiB, 512MiB or a byte count", text);
  return uint64_t(std::llround(value * scale));
}

std::string format_bytes(uint64_t bytes) {
  const double b = double(bytes);
  if (b >= double(1ull << 30)) return fmt::format("{:.2f} GiB", b / double(1ull << 30));
  return fmt::format("{:.0f} MiB", b / double(1ull << 20));
}

}  // namespace qlora
