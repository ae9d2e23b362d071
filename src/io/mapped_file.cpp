// mmap-based file mapping; empty files map to a null pointer with size 0.
#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace qlora {

MappedFile map_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail("io", "cannot open {}: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("io", "cannot open {}: not a regular file", path);
  }
  MappedFile file;
  file.size = size_t(st.st_size);
  if (file.size == 0) {
    ::close(fd);
    return file;
  }
  void* p = ::mmap(nullptr, file.size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) fail("io", "cannot map {}: {}", path, std::strerror(errno));
  const size_t size = file.size;
  file.data = static_cast<const uint8_t*>(p);
  file.owner = std::shared_ptr<void>(p, [size](void* q) { ::munmap(q, size); });
  return file;
}

namespace {

// madvise over the whole pages covering [p, p + bytes). Advice only: a failure changes nothing
// but residency.
void advise_pages(const void* p, size_t bytes, int advice) {
  if (!p || bytes == 0) return;
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = uintptr_t(p) / page * page;
  const uintptr_t end = (uintptr_t(p) + bytes + page - 1) / page * page;
  ::madvise(reinterpret_cast<void*>(begin), end - begin, advice);
}

}  // namespace

void prefetch_mapped_pages(const void* p, size_t bytes) { advise_pages(p, bytes, MADV_WILLNEED); }

void release_mapped_pages(const void* p, size_t bytes) { advise_pages(p, bytes, MADV_DONTNEED); }

}  // namespace qlora
