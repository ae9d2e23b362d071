// Heap and paged optimizer-state stores (see state_store.h).
//
// PagedStateStore: one spill file (mkstemp in spill_dir or the temp dir, unlinked at once so it
// vanishes with the process), every buffer at a page-aligned offset in it, each buffer mapped
// MAP_SHARED on its own (so growing the file never moves an existing mapping). Space is reserved
// with posix_fallocate at create(), so a full disk is an Error there instead of a SIGBUS on the
// first write through the mapping. unmap() madvise(MADV_DONTNEED)s the pages no other live map()
// covers: for a shared file mapping the kernel moves the dirty bits to the page cache and drops
// the pages from this process; their data stays in the page cache / file and is faulted back on
// the next map(), and the kernel may write them back and evict them under memory pressure.
//
// resident_bytes() of the paged store COUNTS the system pages covered by live map() ranges (each
// page once, however many maps cover it). mincore() cannot measure this: for a file mapping it
// reports page-cache residency, which a released page keeps. tests/unit/test_optim.cpp checks the
// count during a step and cross-checks the process RSS (/proc/self/statm) around a 64 MB step.
// Like the optimizers, the stores are not thread-safe: map/unmap from one thread.
#include "optim/state_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

namespace qlora {
namespace {

size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }

class HeapStateStore final : public StateStore {
 public:
  size_t create(const std::string& name, size_t bytes) override {
    buffers_.push_back({name, Storage::allocate(bytes), bytes});
    total_ += bytes;
    return buffers_.size() - 1;
  }
  size_t bytes(size_t handle) const override { return at(handle).bytes; }
  const std::string& name(size_t handle) const override { return at(handle).name; }
  size_t count() const override { return buffers_.size(); }
  uint8_t* map(size_t handle, size_t offset, size_t bytes) override {
    const Buffer& b = at(handle);
    QLORA_ASSERT(offset + bytes <= b.bytes, "map [{}, {}) beyond buffer {} of {} bytes", offset, offset + bytes,
                 b.name, b.bytes);
    return static_cast<uint8_t*>(b.storage->data) + offset;
  }
  void unmap(size_t, size_t, size_t) override {}
  size_t page_bytes() const override { return SIZE_MAX; }
  size_t total_bytes() const override { return total_; }
  size_t resident_bytes() const override { return total_; }
  std::string kind() const override { return "heap"; }

 private:
  struct Buffer {
    std::string name;
    std::shared_ptr<Storage> storage;
    size_t bytes;
  };
  const Buffer& at(size_t handle) const {
    QLORA_ASSERT(handle < buffers_.size(), "state handle {} of {}", handle, buffers_.size());
    return buffers_[handle];
  }
  std::vector<Buffer> buffers_;
  size_t total_ = 0;
};

class PagedStateStore final : public StateStore {
 public:
  PagedStateStore(const std::string& spill_dir, size_t page_bytes) {
    sys_page_ = size_t(sysconf(_SC_PAGESIZE));
    page_bytes_ = round_up(std::max<size_t>(page_bytes, 1), sys_page_);
    std::string dir = spill_dir;
    if (dir.empty()) {
      std::error_code ec;
      dir = std::filesystem::temp_directory_path(ec).string();
      if (ec || dir.empty()) dir = "/tmp";
    }
    std::string tmpl = dir + "/qlora-optim-state-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    fd_ = mkstemp(buf.data());
    if (fd_ < 0)
      fail("optim", "cannot create the optimizer-state spill file {}: {}; hint: set a writable spill directory",
           tmpl, std::strerror(errno));
    path_ = buf.data();
    // Unlinked at once: the file lives as long as the descriptor, even if the process crashes.
    unlink(path_.c_str());
  }
  ~PagedStateStore() override {
    for (Buffer& b : buffers_)
      if (b.base) munmap(b.base, b.mapped_bytes);
    if (fd_ >= 0) close(fd_);
  }

  size_t create(const std::string& name, size_t bytes) override {
    Buffer b{name, bytes, file_bytes_, round_up(bytes, sys_page_), nullptr};
    if (b.mapped_bytes > 0) {
      // Reserve the blocks now (a full disk fails here, not as SIGBUS later); the new range reads zero.
      const int rc = posix_fallocate(fd_, off_t(b.file_offset), off_t(b.mapped_bytes));
      if (rc != 0)
        fail("optim", "cannot grow the optimizer-state spill file {} (deleted) to {} bytes for {}: {}", path_,
             b.file_offset + b.mapped_bytes, name, std::strerror(rc));
      void* p = mmap(nullptr, b.mapped_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, off_t(b.file_offset));
      if (p == MAP_FAILED)
        fail("optim", "cannot map {} bytes of the optimizer-state spill file {} (deleted) for {}: {}",
             b.mapped_bytes, path_, name, std::strerror(errno));
      b.base = static_cast<uint8_t*>(p);
      file_bytes_ += b.mapped_bytes;
    }
    buffers_.push_back(b);
    total_ += bytes;
    return buffers_.size() - 1;
  }
  size_t bytes(size_t handle) const override { return at(handle).bytes; }
  const std::string& name(size_t handle) const override { return at(handle).name; }
  size_t count() const override { return buffers_.size(); }

  uint8_t* map(size_t handle, size_t offset, size_t bytes) override {
    const Buffer& b = at(handle);
    QLORA_ASSERT(offset + bytes <= b.bytes, "map [{}, {}) beyond buffer {} of {} bytes", offset, offset + bytes,
                 b.name, b.bytes);
    if (bytes > 0) {
      const size_t first = offset / sys_page_, last = (offset + bytes - 1) / sys_page_;
      for (size_t page = first; page <= last; ++page) ++live_[key(handle, page)];
#ifdef MADV_POPULATE_WRITE
      // Fault the range in with one call instead of one fault per page (Linux >= 5.14; older
      // kernels answer EINVAL and the pages fault in on first touch as usual).
      madvise(b.base + first * sys_page_, (last + 1 - first) * sys_page_, MADV_POPULATE_WRITE);
#endif
    }
    return b.base + offset;
  }

  void unmap(size_t handle, size_t offset, size_t bytes) override {
    const Buffer& b = at(handle);
    if (bytes == 0) return;
    QLORA_ASSERT(offset + bytes <= b.bytes, "unmap beyond buffer {}", b.name);
    const size_t first = offset / sys_page_, last = (offset + bytes - 1) / sys_page_;
    // Release runs of pages that no other live map() still covers.
    size_t run_begin = SIZE_MAX;
    auto flush = [&](size_t end_page) {
      if (run_begin == SIZE_MAX) return;
      madvise(b.base + run_begin * sys_page_, (end_page - run_begin) * sys_page_, MADV_DONTNEED);
      run_begin = SIZE_MAX;
    };
    for (size_t page = first; page <= last; ++page) {
      auto it = live_.find(key(handle, page));
      QLORA_ASSERT(it != live_.end(), "unmap of {} page {} that is not mapped", b.name, page);
      if (--it->second == 0) {
        live_.erase(it);
        if (run_begin == SIZE_MAX) run_begin = page;
      } else {
        flush(page);
      }
    }
    flush(last + 1);
  }

  size_t page_bytes() const override { return page_bytes_; }
  size_t total_bytes() const override { return total_; }
  size_t resident_bytes() const override { return live_.size() * sys_page_; }
  std::string kind() const override { return "paged"; }

 private:
  struct Buffer {
    std::string name;
    size_t bytes;
    size_t file_offset;   // page-aligned
    size_t mapped_bytes;  // bytes rounded up to the system page
    uint8_t* base;
  };
  const Buffer& at(size_t handle) const {
    QLORA_ASSERT(handle < buffers_.size(), "state handle {} of {}", handle, buffers_.size());
    return buffers_[handle];
  }
  static uint64_t key(size_t handle, size_t page) { return (uint64_t(handle) << 40) | uint64_t(page); }

  std::string path_;
  int fd_ = -1;
  size_t sys_page_ = 4096, page_bytes_ = 0, file_bytes_ = 0, total_ = 0;
  std::vector<Buffer> buffers_;
  std::unordered_map<uint64_t, int> live_;  // (handle, system page) -> live map() count
};

}  // namespace

std::unique_ptr<StateStore> make_heap_state_store() { return std::make_unique<HeapStateStore>(); }

std::unique_ptr<StateStore> make_paged_state_store(const std::string& spill_dir, size_t page_bytes) {
  return std::make_unique<PagedStateStore>(spill_dir, page_bytes);
}

}  // namespace qlora
