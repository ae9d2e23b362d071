// safetensors reader and writer. Format: u64 little-endian header length N, N bytes of JSON
// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}), then the data.
// The reader memory-maps the file and validates before touching data: header length within the
// file, JSON well-formed, known dtype, offsets in range, sizes equal to shape x dtype, no overlaps.
// The writers are atomic (temp file, fsync, rename); SafetensorsStreamWriter writes a file tensor
// by tensor, so a model of any size is written holding one tensor. Tested in
// tests/unit/test_safetensors.cpp.
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

// Dtypes as safetensors spells them (F32, BF16, U8, ...).
const char* safetensors_dtype_name(DType dtype);

// Writes tensors (in the given order) atomically.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// A safetensors file written one tensor at a time. The tensors are declared up front (name, dtype,
// shape), so the header and every offset are known before any data; write() then takes them in
// declared order. A few small tensors whose bytes are not known until later (bitsandbytes'
// quant_state JSON, which holds a value computed while quantizing) are declared with an upper
// bound, given by write_deferred() at any time, and stored after the others: the header is
// written last, into space reserved for it at the start and padded with spaces (which the
// format allows). Nothing appears at `path` until commit(); destroyed uncommitted, nothing does.
class SafetensorsStreamWriter {
 public:
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
  };
  struct Deferred {
    std::string name;
    size_t max_bytes;  // a U8 tensor of at most this many bytes
  };
  SafetensorsStreamWriter(std::string path, std::vector<Entry> entries, std::vector<Deferred> deferred = {},
                          std::map<std::string, std::string> metadata = {});
  ~SafetensorsStreamWriter();

  // The next declared entry; `t` must have its dtype and shape.
  void write(const std::string& name, const Tensor& t);
  void write_deferred(const std::string& name, std::string bytes);
  // Every entry and deferred tensor written: stores the deferred data and the header, renames.
  void commit();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qlora
