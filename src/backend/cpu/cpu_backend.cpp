// CpuBackend: host memory and the backend/cpu kernels behind the Backend interface. Every kernel
// is a one-line call into its family's file; this file only routes, so a CUDA twin's parity test
// compares the same names.
#include "backend/cpu/cpu_backend.h"

#include <cstdlib>
#include <cstring>

#include "backend/cpu/attention.h"
#include "backend/cpu/block_ops.h"
#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/cross_entropy.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/lora_ops.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/moe_ops.h"
#include "backend/cpu/optimizer_ops.h"
#include "backend/cpu/qmatmul.h"
#include "backend/cpu/threads.h"
#include "core/error.h"
#include "core/host_memory.h"

namespace qlora {

void* CpuBackend::allocate(size_t bytes) { return host_allocate(bytes); }
void CpuBackend::deallocate(void* p, size_t bytes) { host_free(p, bytes); }
void CpuBackend::memset(void* dst, int value, size_t bytes) {
  if (bytes) std::memset(dst, value, bytes);
}
void CpuBackend::copy_from_host(void* dst, const void* host_src, size_t bytes, Stream) {
  if (bytes) std::memcpy(dst, host_src, bytes);
}
void CpuBackend::copy_to_host(void* host_dst, const void* src, size_t bytes, Stream) {
  if (bytes) std::memcpy(host_dst, src, bytes);
}
void CpuBackend::copy(void* dst, const void* src, size_t bytes, Stream) {
  if (bytes) std::memmove(dst, src, bytes);
}

#define QLORA_CPU_BACKEND_KERNELS(T)                                                                                 \
  void CpuBackend::rmsnorm_forward(const T* x, const T* weight, T* y, T* rstd, int64_t N, int64_t C, double eps) {   \
    cpu::rmsnorm_forward<T>(x, weight, y, rstd, N, C, eps);                                                          \
  }                                                                                                                  \
  void CpuBackend::rmsnorm_backward(const T* dy, const T* x, const T* weight, const T* rstd, T* dx, T* dweight,      \
                                    int64_t N, int64_t C) {                                                          \
    cpu::rmsnorm_backward<T>(dy, x, weight, rstd, dx, dweight, N, C);                                                \
  }                                                                                                                  \
  void CpuBackend::rope_forward(T* x, const int64_t* positions, const float* inv_freq, int64_t N, int64_t H,        \
                                int64_t D) {                                                                         \
    cpu::rope_forward<T>(x, positions, inv_freq, N, H, D);                                                           \
  }                                                                                                                  \
  void CpuBackend::rope_backward(T* dx, const int64_t* positions, const float* inv_freq, int64_t N, int64_t H,      \
                                 int64_t D) {                                                                        \
    cpu::rope_backward<T>(dx, positions, inv_freq, N, H, D);                                                         \
  }                                                                                                                  \
  void CpuBackend::swiglu_forward(const T* gate, const T* up, T* out, int64_t n) {                                   \
    cpu::swiglu_forward<T>(gate, up, out, n);                                                                        \
  }                                                                                                                  \
  void CpuBackend::swiglu_backward(const T* dout, const T* gate, const T* up, T* dgate, T* dup, int64_t n) {        \
    cpu::swiglu_backward<T>(dout, gate, up, dgate, dup, n);                                                          \
  }                                                                                                                  \
  void CpuBackend::embedding_forward(const Tensor& table, const int32_t* ids, int64_t N, T* out) {                   \
    cpu::embedding_forward<T>(table, ids, N, out);                                                                   \
  }                                                                                                                  \
  void CpuBackend::embedding_backward(const T* dout, const int32_t* ids, int64_t N, int64_t C, T* dtable) {          \
    cpu::embedding_backward<T>(dout, ids, N, C, dtable);                                                             \
  }                                                                                                                  \
  void CpuBackend::add_inplace(T* x, const T* y, int64_t n) { cpu::add_inplace<T>(x, y, n); }                         \
  void CpuBackend::moe_route_forward(const T* logits, int64_t N, int64_t E, int64_t k, bool renormalize, T* probs,    \
                                     int32_t* idx, T* weights) {                                                      \
    cpu::moe_route_forward<T>(logits, N, E, k, renormalize, probs, idx, weights);                                     \
  }                                                                                                                  \
  void CpuBackend::moe_route_backward(const T* probs, const int32_t* idx, const T* weights, const T* dweights,        \
                                      const T* dprobs, int64_t N, int64_t E, int64_t k, bool renormalize,             \
                                      T* dlogits) {                                                                   \
    cpu::moe_route_backward<T>(probs, idx, weights, dweights, dprobs, N, E, k, renormalize, dlogits);                 \
  }                                                                                                                  \
  void CpuBackend::gather_rows(const T* src, const int32_t* rows, const T* scale, int64_t n, int64_t C, T* dst) {    \
    cpu::gather_rows<T>(src, rows, scale, n, C, dst);                                                                \
  }                                                                                                                  \
  void CpuBackend::scatter_add_rows(const T* src, const int32_t* rows, const T* scale, int64_t n, int64_t C, T* dst) { \
    cpu::scatter_add_rows<T>(src, rows, scale, n, C, dst);                                                           \
  }                                                                                                                  \
  void CpuBackend::gathered_row_dots(const T* a, const int32_t* rows, const T* b, int64_t n, int64_t C, T* out) {    \
    cpu::gathered_row_dots<T>(a, rows, b, n, C, out);                                                                \
  }                                                                                                                  \
  void CpuBackend::attention_forward(const T* q, const T* k, const T* v, const int32_t* segment_ids, T* out, T* lse, \
                                     const AttentionShape& shape) {                                                  \
    cpu::attention_forward<T>(q, k, v, segment_ids, out, lse, shape);                                                \
  }                                                                                                                  \
  void CpuBackend::attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* out, const T* lse, \
                                      const int32_t* segment_ids, T* dq, T* dk, T* dv, const AttentionShape& shape) {  \
    cpu::attention_backward<T>(dout, q, k, v, out, lse, segment_ids, dq, dk, dv, shape);                             \
  }                                                                                                                  \
  CrossEntropyResult CpuBackend::cross_entropy_forward(const T* h, const Tensor& w, const int32_t* targets,         \
                                                       int64_t N, T* row_losses, int64_t chunk_rows) {               \
    return cpu::cross_entropy_forward<T>(h, w, targets, N, row_losses, chunk_rows);                                  \
  }                                                                                                                  \
  CrossEntropyResult CpuBackend::cross_entropy_forward_backward(const T* h, const Tensor& w, const int32_t* targets, \
                                                                int64_t N, T grad_scale, T* dh, T* dw,               \
                                                                int64_t chunk_rows) {                                \
    return cpu::cross_entropy_forward_backward<T>(h, w, targets, N, grad_scale, dh, dw, chunk_rows);                 \
  }                                                                                                                  \
  void CpuBackend::matmul_xwt(const T* x, const Tensor& w, T* y, int64_t N) { cpu::matmul_xwt<T>(x, w, y, N); }      \
  void CpuBackend::matmul_dy_w_acc(const T* dy, const Tensor& w, T* dx, int64_t N) {                                 \
    cpu::matmul_dy_w_acc<T>(dy, w, dx, N);                                                                           \
  }                                                                                                                  \
  void CpuBackend::matmul_dyt_x_acc(const T* dy, const T* x, T* dw, int64_t N, int64_t O, int64_t K) {               \
    cpu::matmul_dyt_x_acc<T>(dy, x, dw, N, O, K);                                                                    \
  }                                                                                                                  \
  void CpuBackend::gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,           \
                        int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {                          \
    cpu::gemm<T>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);                                    \
  }                                                                                                                  \
  void CpuBackend::qmatmul_forward(const T* x, const QuantTensor& w, T* y, int64_t N) {                              \
    cpu::qmatmul_forward(x, w, y, N);                                                                                \
  }                                                                                                                  \
  void CpuBackend::qmatmul_dy_w_acc(const T* dy, const QuantTensor& w, T* dx, int64_t N) {                           \
    cpu::qmatmul_dy_w_acc(dy, w, dx, N);                                                                             \
  }                                                                                                                  \
  void CpuBackend::dropout_apply(const T* x, const uint8_t* keep, double p, T* out, int64_t n) {                     \
    cpu::dropout_apply<T>(x, keep, p, out, n);                                                                       \
  }                                                                                                                  \
  void CpuBackend::dropout_backward_acc(const T* dy, const uint8_t* keep, double p, T* dx, int64_t n) {              \
    cpu::dropout_backward_acc<T>(dy, keep, p, dx, n);                                                                \
  }                                                                                                                  \
  void CpuBackend::add_bias(const Tensor& bias, T* y, int64_t N, int64_t O) { cpu::add_bias<T>(bias, y, N, O); }     \
  void CpuBackend::add_column_sums(const T* dy, T* out, int64_t N, int64_t O) {                                      \
    cpu::add_column_sums<T>(dy, out, N, O);                                                                          \
  }
QLORA_CPU_BACKEND_KERNELS(float)
QLORA_CPU_BACKEND_KERNELS(double)
#undef QLORA_CPU_BACKEND_KERNELS

void CpuBackend::matmul_xwt_bf16(const float* x, const Tensor& w, float* y, int64_t N) {
  cpu::matmul_xwt_bf16(x, w, y, N);
}
void CpuBackend::matmul_dy_w_acc_bf16(const float* dy, const Tensor& w, float* dx, int64_t N) {
  cpu::matmul_dy_w_acc_bf16(dy, w, dx, N);
}
void CpuBackend::matmul_dyt_x_acc_bf16(const float* dy, const float* x, float* dw, int64_t N, int64_t O, int64_t K) {
  cpu::matmul_dyt_x_acc_bf16(dy, x, dw, N, O, K);
}
void CpuBackend::qmatmul_forward_bf16(const float* x, const QuantTensor& w, float* y, int64_t N) {
  cpu::qmatmul_forward_bf16(x, w, y, N);
}
void CpuBackend::qmatmul_dy_w_acc_bf16(const float* dy, const QuantTensor& w, float* dx, int64_t N) {
  cpu::qmatmul_dy_w_acc_bf16(dy, w, dx, N);
}

CrossEntropyResult CpuBackend::cross_entropy_forward_bf16(const float* h, const Tensor& w, const int32_t* targets,
                                                          int64_t N, float* row_losses, int64_t chunk_rows) {
  return cpu::cross_entropy_forward_bf16(h, w, targets, N, row_losses, chunk_rows);
}

CrossEntropyResult CpuBackend::cross_entropy_forward_backward_bf16(const float* h, const Tensor& w,
                                                                   const int32_t* targets, int64_t N, float grad_scale,
                                                                   float* dh, float* dw, int64_t chunk_rows) {
  return cpu::cross_entropy_forward_backward_bf16(h, w, targets, N, grad_scale, dh, dw, chunk_rows);
}

bool CpuBackend::native_bf16() const { return cpu::has_bf16_kernel(cpu::active_isa()); }
void CpuBackend::fit_to_load() { fit_threads_to_load(); }

void CpuBackend::round_to_bf16(float* x, int64_t n) { qlora::round_to_bf16(x, size_t(n)); }
void CpuBackend::convert_f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
  qlora::convert_f32_to_bf16(src, dst, size_t(n));
}
void CpuBackend::convert(const Tensor& src, const Tensor& dst) {
  if (src.numel() != dst.numel())
    fail("cpu", "convert: {} into {} (element counts differ)", src.describe(), dst.describe());
  const Tensor converted = src.to(dst.dtype());
  std::memcpy(dst.raw(), converted.raw(), dst.nbytes());
}
void CpuBackend::dequantize_4bit(const QuantTensor& w, float* out) { cpu::dequantize_4bit(w, out); }
void CpuBackend::dropout_mask(uint64_t seed, double p, int64_t N, int64_t K, uint8_t* keep) {
  cpu::dropout_mask(seed, p, N, K, keep);
}
void CpuBackend::merge_lora(float* w, const double* base64, const double* A, const double* B, int64_t O, int64_t K,
                            int64_t R, double scale) {
  cpu::merge_lora(w, base64, A, B, O, K, R, scale);
}
void CpuBackend::adamw_step(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& k) {
  cpu::adamw_step(p, g, m, v, n, k);
}
void CpuBackend::adamw8bit_step(float* p, const float* g, uint8_t* q1, uint8_t* q2, float* absmax1, float* absmax2,
                                int64_t n, const DynamicMaps& maps, const AdamW8bitScalars& k) {
  cpu::adamw8bit_step(p, g, q1, q2, absmax1, absmax2, n, maps, k);
}
void CpuBackend::adamw32bit_bnb_step(float* p, const float* g, float* m, float* v, int64_t n,
                                     const AdamW8bitScalars& k) {
  cpu::adamw32bit_bnb_step(p, g, m, v, n, k);
}
double CpuBackend::sum_squares(const float* x, int64_t n) { return cpu::sum_squares(x, n); }
bool CpuBackend::all_finite(const float* x, int64_t n) { return cpu::all_finite(x, n); }
void CpuBackend::scale(float* x, int64_t n, float factor) { cpu::scale(x, n, factor); }

std::shared_ptr<Backend> make_cpu_backend() { return std::make_shared<CpuBackend>(); }

}  // namespace qlora
