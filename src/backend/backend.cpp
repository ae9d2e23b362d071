// Backend's tensor helpers and the defaults of the f64 kernels (a backend without them says so).
// Tested through tests/unit/test_backend_seam.cpp.
#include "backend/backend.h"

#include "core/error.h"

namespace qlora {

Tensor Backend::zeros(Shape shape, DType dtype) {
  const size_t bytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  void* p = bytes ? allocate(bytes) : nullptr;
  // The storage frees itself through this backend and keeps it alive until then.
  std::shared_ptr<Backend> self = shared_from_this();
  auto owner = std::shared_ptr<void>(p, [self, bytes](void* q) {
    if (q) self->deallocate(q, bytes);
  });
  return Tensor(std::move(shape), dtype, Storage::adopt(p, bytes, device(), std::move(owner)));
}

Tensor Backend::to_device(const Tensor& t) {
  if (!t.defined() || t.device() == device()) return t;
  QLORA_ASSERT(t.on_host(), "to_device of {}: only host tensors are copied in", t.describe());
  Tensor out = zeros(t.shape(), t.dtype());
  upload(out, t.raw());
  return out;
}

QuantTensor Backend::to_device(const QuantTensor& q) {
  QuantTensor out = q;
  for (Tensor* t : {&out.codes, &out.code, &out.absmax, &out.absmax_codes, &out.nested_absmax, &out.nested_code})
    *t = to_device(*t);
  return out;
}

Tensor Backend::to_host(const Tensor& t) {
  if (!t.defined() || t.on_host()) return t;
  Tensor out = Tensor::zeros(t.shape(), t.dtype());
  download(out.raw(), t);
  return out;
}

void Backend::upload(const Tensor& dst, const void* host_src) {
  QLORA_ASSERT(dst.device() == device(), "upload into {} through the {} backend", dst.describe(), name());
  if (dst.nbytes()) copy_from_host(dst.raw(), host_src, dst.nbytes());
}

void Backend::download(void* host_dst, const Tensor& src) {
  QLORA_ASSERT(src.device() == device(), "download of {} through the {} backend", src.describe(), name());
  if (src.nbytes()) copy_to_host(host_dst, src.raw(), src.nbytes());
}

void Backend::no_f64(const char* op) const {
  fail(name(), "{}: no f64 kernel on this backend (f64 is for gradient checks; run them on the CPU backend)", op);
}

// ---- f64 defaults ------------------------------------------------------------------------------

void Backend::rmsnorm_forward(const double*, const double*, double*, double*, int64_t, int64_t, double) {
  no_f64("rmsnorm_forward");
}
void Backend::rmsnorm_backward(const double*, const double*, const double*, const double*, double*, double*, int64_t,
                               int64_t) {
  no_f64("rmsnorm_backward");
}
void Backend::rope_forward(double*, const int64_t*, const float*, int64_t, int64_t, int64_t) { no_f64("rope_forward"); }
void Backend::rope_backward(double*, const int64_t*, const float*, int64_t, int64_t, int64_t) {
  no_f64("rope_backward");
}
void Backend::swiglu_forward(const double*, const double*, double*, int64_t) { no_f64("swiglu_forward"); }
void Backend::swiglu_backward(const double*, const double*, const double*, double*, double*, int64_t) {
  no_f64("swiglu_backward");
}
void Backend::embedding_forward(const Tensor&, const int32_t*, int64_t, double*) { no_f64("embedding_forward"); }
void Backend::embedding_backward(const double*, const int32_t*, int64_t, int64_t, double*) {
  no_f64("embedding_backward");
}
void Backend::add_inplace(double*, const double*, int64_t) { no_f64("add_inplace"); }
void Backend::moe_route_forward(const double*, int64_t, int64_t, int64_t, bool, double*, int32_t*, double*) {
  no_f64("moe_route_forward");
}
void Backend::moe_route_backward(const double*, const int32_t*, const double*, const double*, const double*, int64_t,
                                 int64_t, int64_t, bool, double*) {
  no_f64("moe_route_backward");
}
void Backend::gather_rows(const double*, const int32_t*, const double*, int64_t, int64_t, double*) {
  no_f64("gather_rows");
}
void Backend::scatter_add_rows(const double*, const int32_t*, const double*, int64_t, int64_t, double*) {
  no_f64("scatter_add_rows");
}
void Backend::gathered_row_dots(const double*, const int32_t*, const double*, int64_t, int64_t, double*) {
  no_f64("gathered_row_dots");
}
void Backend::attention_forward(const double*, const double*, const double*, const int32_t*, double*, double*,
                                const AttentionShape&) {
  no_f64("attention_forward");
}
void Backend::attention_backward(const double*, const double*, const double*, const double*, const double*,
                                 const double*, const int32_t*, double*, double*, double*, const AttentionShape&) {
  no_f64("attention_backward");
}
CrossEntropyResult Backend::cross_entropy_forward(const double*, const Tensor&, const int32_t*, int64_t, double*,
                                                  int64_t) {
  no_f64("cross_entropy_forward");
}
CrossEntropyResult Backend::cross_entropy_forward_backward(const double*, const Tensor&, const int32_t*, int64_t,
                                                           double, double*, double*, int64_t) {
  no_f64("cross_entropy_forward_backward");
}
void Backend::matmul_xwt(const double*, const Tensor&, double*, int64_t) { no_f64("matmul_xwt"); }
void Backend::matmul_dy_w_acc(const double*, const Tensor&, double*, int64_t) { no_f64("matmul_dy_w_acc"); }
void Backend::matmul_dyt_x_acc(const double*, const double*, double*, int64_t, int64_t, int64_t) {
  no_f64("matmul_dyt_x_acc");
}
void Backend::gemm(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*, int64_t,
                   double, double*, int64_t) {
  no_f64("gemm");
}
void Backend::qmatmul_forward(const double*, const QuantTensor&, double*, int64_t) { no_f64("qmatmul_forward"); }
void Backend::qmatmul_dy_w_acc(const double*, const QuantTensor&, double*, int64_t) { no_f64("qmatmul_dy_w_acc"); }
void Backend::dropout_apply(const double*, const uint8_t*, double, double*, int64_t) { no_f64("dropout_apply"); }
void Backend::dropout_backward_acc(const double*, const uint8_t*, double, double*, int64_t) {
  no_f64("dropout_backward_acc");
}
void Backend::add_bias(const Tensor&, double*, int64_t, int64_t) { no_f64("add_bias"); }
void Backend::add_column_sums(const double*, double*, int64_t, int64_t) { no_f64("add_column_sums"); }

}  // namespace qlora
