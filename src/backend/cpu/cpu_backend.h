// The CPU backend: host memory (64-byte aligned, zero-filled), synchronous copies, and the kernels
// of backend/cpu (OpenBLAS + OpenMP, AVX-512 where it helps) behind the Backend interface, in f32
// and f64. Subclassed by the seam test's checking backend (tests/unit/test_backend_seam.cpp).
// Tested through every engine test; per kernel in tests/unit/test_train_ops.cpp and friends.
#pragma once
#include <memory>

#include "backend/backend.h"

namespace qlora {

class CpuBackend : public Backend {
 public:
  Device device() const override { return kHostDevice; }
  std::string name() const override { return "cpu"; }
  bool native_bf16() const override;  // AMX or AVX512-BF16 (cpu_isa.h), QLORA_CPU_ISA respected
  void fit_to_load() override;         // fit_threads_to_load (threads.h)

  void* allocate(size_t bytes) override;
  void deallocate(void* p, size_t bytes) override;
  void memset(void* dst, int value, size_t bytes) override;
  void copy_from_host(void* dst, const void* host_src, size_t bytes, Stream stream = 0) override;
  void copy_to_host(void* host_dst, const void* src, size_t bytes, Stream stream = 0) override;
  void copy(void* dst, const void* src, size_t bytes, Stream stream = 0) override;

#define QLORA_CPU_BACKEND_KERNELS(T)                                                                                 \
  void rmsnorm_forward(const T* x, const T* weight, T* y, T* rstd, int64_t N, int64_t C, double eps) override;       \
  void rmsnorm_backward(const T* dy, const T* x, const T* weight, const T* rstd, T* dx, T* dweight, int64_t N,      \
                        int64_t C) override;                                                                        \
  void rope_forward(T* x, const int64_t* positions, const float* inv_freq, int64_t N, int64_t H, int64_t D) override; \
  void rope_backward(T* dx, const int64_t* positions, const float* inv_freq, int64_t N, int64_t H, int64_t D)        \
      override;                                                                                                      \
  void swiglu_forward(const T* gate, const T* up, T* out, int64_t n) override;                                       \
  void swiglu_backward(const T* dout, const T* gate, const T* up, T* dgate, T* dup, int64_t n) override;            \
  void embedding_forward(const Tensor& table, const int32_t* ids, int64_t N, T* out) override;                       \
  void embedding_backward(const T* dout, const int32_t* ids, int64_t N, int64_t C, T* dtable) override;              \
  void add_inplace(T* x, const T* y, int64_t n) override;                                                            \
  void moe_route_forward(const T* logits, int64_t N, int64_t E, int64_t k, bool renormalize, T* probs, int32_t* idx,  \
                         T* weights) override;                                                                        \
  void moe_route_backward(const T* probs, const int32_t* idx, const T* weights, const T* dweights, const T* dprobs,   \
                          int64_t N, int64_t E, int64_t k, bool renormalize, T* dlogits) override;                    \
  void gather_rows(const T* src, const int32_t* rows, const T* scale, int64_t n, int64_t C, T* dst) override;        \
  void scatter_add_rows(const T* src, const int32_t* rows, const T* scale, int64_t n, int64_t C, T* dst) override;   \
  void gathered_row_dots(const T* a, const int32_t* rows, const T* b, int64_t n, int64_t C, T* out) override;        \
  void attention_forward(const T* q, const T* k, const T* v, const int32_t* segment_ids, T* out, T* lse,            \
                         const AttentionShape& shape) override;                                                      \
  void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* out, const T* lse,            \
                          const int32_t* segment_ids, T* dq, T* dk, T* dv, const AttentionShape& shape) override;     \
  CrossEntropyResult cross_entropy_forward(const T* h, const Tensor& w, const int32_t* targets, int64_t N,          \
                                           T* row_losses, int64_t chunk_rows) override;                             \
  CrossEntropyResult cross_entropy_forward_backward(const T* h, const Tensor& w, const int32_t* targets, int64_t N, \
                                                    T grad_scale, T* dh, T* dw, int64_t chunk_rows) override;        \
  void matmul_xwt(const T* x, const Tensor& w, T* y, int64_t N) override;                                            \
  void matmul_dy_w_acc(const T* dy, const Tensor& w, T* dx, int64_t N) override;                                     \
  void matmul_dyt_x_acc(const T* dy, const T* x, T* dw, int64_t N, int64_t O, int64_t K) override;                   \
  void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,          \
            const T* b, int64_t ldb, T beta, T* c, int64_t ldc) override;                                           \
  void qmatmul_forward(const T* x, const QuantTensor& w, T* y, int64_t N) override;                                  \
  void qmatmul_dy_w_acc(const T* dy, const QuantTensor& w, T* dx, int64_t N) override;                               \
  void dropout_apply(const T* x, const uint8_t* keep, double p, T* out, int64_t n) override;                         \
  void dropout_backward_acc(const T* dy, const uint8_t* keep, double p, T* dx, int64_t n) override;                  \
  void add_bias(const Tensor& bias, T* y, int64_t N, int64_t O) override;                                            \
  void add_column_sums(const T* dy, T* out, int64_t N, int64_t O) override;
  QLORA_CPU_BACKEND_KERNELS(float)
  QLORA_CPU_BACKEND_KERNELS(double)
#undef QLORA_CPU_BACKEND_KERNELS

  void matmul_xwt_bf16(const float* x, const Tensor& w, float* y, int64_t N) override;
  void matmul_dy_w_acc_bf16(const float* dy, const Tensor& w, float* dx, int64_t N) override;
  void matmul_dyt_x_acc_bf16(const float* dy, const float* x, float* dw, int64_t N, int64_t O, int64_t K) override;
  void qmatmul_forward_bf16(const float* x, const QuantTensor& w, float* y, int64_t N) override;
  void qmatmul_dy_w_acc_bf16(const float* dy, const QuantTensor& w, float* dx, int64_t N) override;
  CrossEntropyResult cross_entropy_forward_bf16(const float* h, const Tensor& w, const int32_t* targets, int64_t N,
                                                float* row_losses, int64_t chunk_rows) override;
  CrossEntropyResult cross_entropy_forward_backward_bf16(const float* h, const Tensor& w, const int32_t* targets,
                                                         int64_t N, float grad_scale, float* dh, float* dw,
                                                         int64_t chunk_rows) override;
  void round_to_bf16(float* x, int64_t n) override;
  void convert_f32_to_bf16(const float* src, uint16_t* dst, int64_t n) override;
  void convert(const Tensor& src, const Tensor& dst) override;
  void dequantize_4bit(const QuantTensor& w, float* out) override;
  void dropout_mask(uint64_t seed, double p, int64_t N, int64_t K, uint8_t* keep) override;
  void merge_lora(float* w, const double* base64, const double* A, const double* B, int64_t O, int64_t K, int64_t R,
                  double scale) override;
  void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& k) override;
  void adamw8bit_step(float* p, const float* g, uint8_t* q1, uint8_t* q2, float* absmax1, float* absmax2, int64_t n,
                      const DynamicMaps& maps, const AdamW8bitScalars& k) override;
  void adamw32bit_bnb_step(float* p, const float* g, float* m, float* v, int64_t n,
                           const AdamW8bitScalars& k) override;
  double sum_squares(const float* x, int64_t n) override;
  bool all_finite(const float* x, int64_t n) override;
  void scale(float* x, int64_t n, float factor) override;
};

// A CPU backend (stateless: any number may exist; threads are set by set_num_threads).
std::shared_ptr<Backend> make_cpu_backend();

}  // namespace qlora
