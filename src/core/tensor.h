// Tensor: a shape, a dtype and a shared, reference-counted byte buffer on a device. Row-major and
// contiguous, outermost dimension first (as PyTorch). Views (row slices, reshapes) share the
// storage; a tensor may also view memory it does not own (a memory-mapped file kept alive by
// `owner`). Host tensors come from Storage::allocate; device tensors from a Backend
// (backend/backend.h), which alone may read or write them. No autograd: ops are Backend kernels.
// Tested in tests/unit/test_tensor.cpp.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"

namespace qlora {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& shape);  // "(3, 4)"
int64_t shape_numel(const Shape& shape);

// A block of bytes on a device. Either owned (`owner` frees it: 64-byte aligned heap memory, or a
// backend's allocation) or borrowed from `owner` (e.g. an mmap), in which case `data` points into
// memory that `owner` keeps alive.
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device;
  std::shared_ptr<void> owner;

  static std::shared_ptr<Storage> allocate(size_t bytes);  // host, zero-filled
  static std::shared_ptr<Storage> borrow(void* data, size_t bytes, std::shared_ptr<void> owner);  // host
  // Memory of another device, freed by `owner` (a backend's allocation).
  static std::shared_ptr<Storage> adopt(void* data, size_t bytes, Device device, std::shared_ptr<void> owner);
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
  Device device() const { return storage_ ? storage_->device : kHostDevice; }
  bool on_host() const { return device().host_accessible(); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }

  void* raw() const { return static_cast<char*>(storage_->data) + offset_; }
  template <typename T>
  T* data() const { return static_cast<T*>(raw()); }

  // Same storage, new shape with the same numel. Throws on a mismatch.
  Tensor reshape(Shape shape) const;
  // Rows [begin, end) of the outermost dimension, sharing storage.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // A converted copy (or *this when the dtype already matches). Host tensors only: a device
  // tensor is converted by its backend.
  Tensor to(DType dtype) const;
  // A deep copy with its own storage. Host tensors only.
  Tensor clone() const;

  std::string describe() const;  // "bf16 (3, 4)", with " on cuda:0" off the host
  // The byte offset of this view in its storage (views of one flat buffer, e.g. parameters).
  size_t offset() const { return offset_; }
  const std::shared_ptr<Storage>& storage() const { return storage_; }

 private:
  Shape shape_;
  DType dtype_ = DType::F32;
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;
};

}  // namespace qlora
