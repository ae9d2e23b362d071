// safetensors reader and writer. Format: u64 little-endian header length N, N bytes of JSON
// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}), then the data.
// The reader memory-maps the file and validates before touching data: header length within the
// file, JSON well-formed, known dtype, offsets in range, sizes equal to shape x dtype, no overlaps.
// The writer is atomic (temp file, fsync, rename). Tested in tests/unit/test_safetensors.cpp.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace qlora {

class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;  // in file order
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  // Zero-copy view into the mapping (kept alive by the returned tensor). Throws Error naming the
  // file and tensor when absent.
  Tensor get(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The stored dtype and shape of a tensor without touching its data.
  DType dtype(const std::string& name) const;
  Shape shape(const std::string& name) const;
  // Drops the pages of a tensor's data from the resident set (io/mapped_file.h).
  void release(const std::string& name) const;

 private:
  struct Entry {
    DType dtype;
    Shape shape;
    size_t begin, end;  // absolute byte offsets in the file
    size_t order;
  };
  std::string path_;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
  std::shared_ptr<void> mapping_;
  const uint8_t* base_ = nullptr;
};

// Writes tensors (in the given order) atomically. Dtypes as safetensors spells them (F32, BF16...).
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace qlora
