// Where optimizer state lives. The optimizer walks every state buffer in pages of page_bytes():
// map() gives a host pointer to a range, unmap() says it is done with it.
//  - HeapStateStore: plain host memory, one page = the whole buffer.
//  - PagedStateStore: a file-backed shared mapping (a spill file, deleted on close) walked in pages;
//    unmap() releases the page from the process (madvise DONTNEED after the write-back is queued), so
//    resident memory stays near one page while the state itself may exceed RAM. The CUDA backend
//    implements the same interface with pinned host memory and copies to the device per page.
// Tested in tests/unit/test_optim.cpp (identical updates through both stores, resident bytes).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace qlora {

class StateStore {
 public:
  virtual ~StateStore() = default;
  // A new zero-filled buffer of `bytes`; returns its handle (0, 1, 2, ... in creation order).
  virtual size_t create(const std::string& name, size_t bytes) = 0;
  virtual size_t bytes(size_t handle) const = 0;
  virtual const std::string& name(size_t handle) const = 0;
  virtual size_t count() const = 0;
  // Host pointer to bytes [offset, offset + bytes) of a buffer, valid until unmap of that range.
  virtual uint8_t* map(size_t handle, size_t offset, size_t bytes) = 0;
  virtual void unmap(size_t handle, size_t offset, size_t bytes) = 0;
  // The range size the optimizer should walk in (SIZE_MAX: whole buffers).
  virtual size_t page_bytes() const = 0;
  // Total bytes of all buffers, and bytes of them currently resident in this process' RAM.
  virtual size_t total_bytes() const = 0;
  virtual size_t resident_bytes() const = 0;
  virtual std::string kind() const = 0;  // "heap" | "paged"
};

std::unique_ptr<StateStore> make_heap_state_store();
// spill_dir: where the spill file goes ("" = the system temp dir). page_bytes: a multiple of the
// system page size (rounded up).
std::unique_ptr<StateStore> make_paged_state_store(const std::string& spill_dir = "", size_t page_bytes = 1 << 20);

}  // namespace qlora
