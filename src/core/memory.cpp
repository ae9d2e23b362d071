// Reads VmRSS / VmHWM from /proc/self/status (kB values).
#include "core/memory.h"

#include <cstdio>
#include <cstring>

namespace qlora {

namespace {

size_t status_kb(const char* key) {
  FILE* f = std::fopen("/proc/self/status", "r");
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

}  // namespace

size_t current_rss_bytes() { return status_kb("VmRSS") * 1024; }
size_t peak_rss_bytes() { return status_kb("VmHWM") * 1024; }

}  // namespace qlora
