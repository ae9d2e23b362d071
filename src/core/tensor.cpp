// Tensor storage, views and dtype conversion.
#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "core/host_memory.h"

namespace qlora {

std::string shape_str(const Shape& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::shared_ptr<Storage> Storage::allocate(size_t bytes) {
  auto storage = std::make_shared<Storage>();
  void* p = host_allocate(bytes);
  storage->data = p;
  storage->bytes = bytes;
  storage->owner = std::shared_ptr<void>(p, [bytes](void* q) { host_free(q, bytes); });
  return storage;
}

std::shared_ptr<Storage> Storage::borrow(void* data, size_t bytes, std::shared_ptr<void> owner) {
  return adopt(data, bytes, kHostDevice, std::move(owner));
}

std::shared_ptr<Storage> Storage::adopt(void* data, size_t bytes, Device device, std::shared_ptr<void> owner) {
  auto storage = std::make_shared<Storage>();
  storage->data = data;
  storage->bytes = bytes;
  storage->device = device;
  storage->owner = std::move(owner);
  return storage;
}

std::string Device::name() const {
  switch (kind) {
    case DeviceKind::Cpu: return "cpu";
    case DeviceKind::Cuda: return "cuda:" + std::to_string(index);
    case DeviceKind::Emulated: return "emulated:" + std::to_string(index);
  }
  return "?";
}

Tensor::Tensor(Shape shape, DType dtype, std::shared_ptr<Storage> storage, size_t offset)
    : shape_(std::move(shape)), dtype_(dtype), storage_(std::move(storage)), offset_(offset) {
  for (int64_t d : shape_)
    if (d < 0) fail("tensor", "negative dimension in shape {}", shape_str(shape_));
  QLORA_ASSERT(storage_ && offset_ + nbytes() <= storage_->bytes, "tensor {} exceeds its storage",
               describe());
}

Tensor Tensor::zeros(Shape shape, DType dtype) {
  const size_t bytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  return Tensor(std::move(shape), dtype, Storage::allocate(bytes));
}

Tensor Tensor::from_vector(const std::vector<float>& values, Shape shape) {
  if (shape_numel(shape) != int64_t(values.size()))
    fail("tensor", "from_vector: {} values do not fill shape {}", values.size(), shape_str(shape));
  Tensor t = zeros(std::move(shape), DType::F32);
  std::memcpy(t.raw(), values.data(), values.size() * 4);
  return t;
}

int64_t Tensor::dim(int i) const {
  const int n = ndim();
  const int j = i < 0 ? i + n : i;
  QLORA_ASSERT(j >= 0 && j < n, "dim {} out of range for {}", i, describe());
  return shape_[size_t(j)];
}

Tensor Tensor::reshape(Shape shape) const {
  if (shape_numel(shape) != numel())
    fail("tensor", "cannot reshape {} to {}", shape_str(shape_), shape_str(shape));
  return Tensor(std::move(shape), dtype_, storage_, offset_);
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  QLORA_ASSERT(ndim() >= 1 && begin >= 0 && begin <= end && end <= shape_[0],
               "slice [{}, {}) of {}", begin, end, describe());
  Shape shape = shape_;
  shape[0] = end - begin;
  const size_t row_bytes = shape_[0] ? nbytes() / size_t(shape_[0]) : 0;
  return Tensor(std::move(shape), dtype_, storage_, offset_ + size_t(begin) * row_bytes);
}

Tensor Tensor::clone() const {
  QLORA_ASSERT(on_host(), "clone of {}: device tensors are copied by their backend", describe());
  Tensor out = zeros(shape_, dtype_);
  std::memcpy(out.raw(), raw(), nbytes());
  return out;
}

Tensor Tensor::to(DType target) const {
  if (target == dtype_) return *this;
  QLORA_ASSERT(on_host(), "to({}) of {}: device tensors are converted by their backend", dtype_name(target),
               describe());
  Tensor out = zeros(shape_, target);
  const size_t n = size_t(numel());
  auto src16 = data<uint16_t>();
  if (target == DType::F32) {
    float* dst = out.data<float>();
    switch (dtype_) {
      case DType::BF16: convert_bf16_to_f32(src16, dst, n); return out;
      case DType::F16: convert_f16_to_f32(src16, dst, n); return out;
      case DType::F64:
        for (size_t i = 0; i < n; ++i) dst[i] = float(data<double>()[i]);
        return out;
      default: break;
    }
  } else if (dtype_ == DType::F32) {
    const float* src = data<float>();
    switch (target) {
      case DType::BF16: convert_f32_to_bf16(src, out.data<uint16_t>(), n); return out;
      case DType::F16: convert_f32_to_f16(src, out.data<uint16_t>(), n); return out;
      case DType::F64:
        for (size_t i = 0; i < n; ++i) out.data<double>()[i] = src[i];
        return out;
      default: break;
    }
  } else {
    return to(DType::F32).to(target);
  }
  fail("tensor", "no conversion from {} to {}", dtype_name(dtype_), dtype_name(target));
}

std::string Tensor::describe() const {
  std::string s = std::string(dtype_name(dtype_)) + " " + shape_str(shape_);
  return on_host() ? s : s + " on " + device().name();
}

}  // namespace qlora
