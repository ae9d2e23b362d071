// Tensor: a shape, a dtype and a shared, reference-counted byte buffer. Row-major and contiguous,
// outermost dimension first (as PyTorch). Views (row slices, reshapes) share the storage; a
// tensor may also view memory it does not own (a memory-mapped file kept alive by `owner`).
// No autograd: ops are free functions in backend/. Tested in tests/unit/test_tensor.cpp.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace qlora {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& shape);  // "(3, 4)"
int64_t shape_numel(const Shape& shape);

// A block of bytes. Either owned (64-byte aligned heap memory) or borrowed from `owner`
// (e.g. an mmap), in which case `data` points into memory that `owner` keeps alive.
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  std::shared_ptr<void> owner;

  static std::shared_ptr<Storage> allocate(size_t bytes);  // zero-filled
  static std::shared_ptr<Storage> borrow(void* data, size_t bytes, std::shared_ptr<void> owner);
};

class Tensor {
 public:
  Tensor() = default;
  Tensor(Shape shape, DType dtype, std::shared_ptr<Storage> storage, size_t offset = 0);

  static Tensor zeros(Shape shape, DType dtype = DType::F32);
  static Tensor from_vector(const std::vector<float>& values, Shape shape);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const;  // negative i counts from the end
  int ndim() const { return int(shape_.size()); }
  DType dtype() const { return dtype_; }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }

  void* raw() const { return static_cast<char*>(storage_->data) + offset_; }
  template <typename T>
  T* data() const { return static_cast<T*>(raw()); }

  // Same storage, new shape with the same numel. Throws on a mismatch.
  Tensor reshape(Shape shape) const;
  // Rows [begin, end) of the outermost dimension, sharing storage.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // A converted copy (or *this when the dtype already matches).
  Tensor to(DType dtype) const;
  // A deep copy with its own storage.
  Tensor clone() const;

  std::string describe() const;  // "bf16 (3, 4)"

 private:
  Shape shape_;
  DType dtype_ = DType::F32;
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;
};

}  // namespace qlora
