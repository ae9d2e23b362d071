// Dense matrix products on the CPU, for T = float and T = double: the forward y = x·Wᵀ and both
// backward products, with W a Tensor (O, K) in f32 or bf16 (T = float) or f64 (T = double, dgemm).
// f32 goes to OpenBLAS (sgemv for a single row: decode); bf16 is dotted directly with AVX-512 for
// a few rows (decode reads W once) and widened to f32 in row panels feeding sgemm otherwise.
// Accumulation in T. Legend: N rows of activations, O output features, K input features.
// Tested in tests/unit/test_train_ops.cpp against plain loops in double.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace qlora::cpu {

// y (N, O) = x (N, K) · wᵀ; y overwritten.
template <typename T>
void matmul_xwt(const T* x, const Tensor& w, T* y, int64_t N);
// dx (N, K) += dy (N, O) · w.
template <typename T>
void matmul_dy_w_acc(const T* dy, const Tensor& w, T* dx, int64_t N);
// dw (O, K) += dyᵀ (O, N) · x (N, K); dw is a plain T array.
template <typename T>
void matmul_dyt_x_acc(const T* dy, const T* x, T* dw, int64_t N, int64_t O, int64_t K);

// bf16 compute (torch autocast): the activation operands rounded to bf16, w bf16 (O, K), products
// exact and summed in f32, on the CPU's bf16 instructions (gemm_bf16.h) or the f32 fallback.
void matmul_xwt_bf16(const float* x, const Tensor& w, float* y, int64_t N);
void matmul_dy_w_acc_bf16(const float* dy, const Tensor& w, float* dx, int64_t N);
void matmul_dyt_x_acc_bf16(const float* dy, const float* x, float* dw, int64_t N, int64_t O, int64_t K);

// Plain-array general matrix product c (m, n) = alpha · op(a) · op(b) + beta · c, row-major,
// op = transpose when the flag is set (cblas sgemm / dgemm).
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
          int64_t ldb, T beta, T* c, int64_t ldc);

}  // namespace qlora::cpu
