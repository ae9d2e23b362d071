// host_allocate / host_free. See host_memory.h.
#include "core/host_memory.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace qlora {

void* host_allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  if (bytes >= kHostMapMinBytes) {
    // Fresh anonymous pages are zero and page-aligned.
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail("memory", "out of memory allocating {} bytes", bytes);
    return p;
  }
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) fail("memory", "out of memory allocating {} bytes", bytes);
  std::memset(p, 0, rounded);
  return p;
}

void host_free(void* p, size_t bytes) {
  if (!p) return;
  if (bytes >= kHostMapMinBytes) ::munmap(p, bytes);
  else std::free(p);
}

}  // namespace qlora
