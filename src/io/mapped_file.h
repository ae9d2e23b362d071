// Read-only memory mapping of a whole file, shared by the safetensors, GGUF and llama2.c readers.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace qlora {

struct MappedFile {
  const uint8_t* data = nullptr;
  size_t size = 0;
  std::shared_ptr<void> owner;  // unmaps when the last tensor viewing it is gone
};

// Throws Error("[io] cannot open <path>: <reason>").
MappedFile map_file(const std::string& path);

// Drops the mapped pages covering [p, p + bytes) from this process's resident set (madvise
// DONTNEED; the pages are clean file pages, so a later read faults them back in from the file).
// A streaming loader calls it once a tensor has been converted, so RSS holds a few tensors of the
// source, not the whole file.
void release_mapped_pages(const void* p, size_t bytes);
// Asks the kernel to read [p, p + bytes) of a mapped file ahead (madvise WILLNEED), so that a
// tensor about to be converted arrives in large reads instead of one page fault at a time.
void prefetch_mapped_pages(const void* p, size_t bytes);

}  // namespace qlora
