// Dense matrix products of training, for T = float and T = double: the forward y = x·Wᵀ and both
// backward products, with W a Tensor (N, K) in f32 or bf16 (T = float; bf16 is widened to f32 in
// row panels feeding sgemm) or f64 (T = double, dgemm). Accumulation in T.
// Legend: M rows of activations, N output features, K input features.
// Tested in tests/unit/test_train_ops.cpp against plain loops in double.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace qlora::cpu {

// y (M, N) = x (M, K) · wᵀ; y overwritten.
template <typename T>
void matmul_xwt(const T* x, const Tensor& w, T* y, int64_t M);
// dx (M, K) += dy (M, N) · w.
template <typename T>
void matmul_dy_w_acc(const T* dy, const Tensor& w, T* dx, int64_t M);
// dw (N, K) += dyᵀ (N, M) · x (M, K); dw is a plain T array.
template <typename T>
void matmul_dyt_x_acc(const T* dy, const T* x, T* dw, int64_t M, int64_t N, int64_t K);

// Plain-array general matrix product c (m, n) = alpha · op(a) · op(b) + beta · c, row-major,
// op = transpose when the flag is set (cblas sgemm / dgemm).
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
          int64_t ldb, T beta, T* c, int64_t ldc);

}  // namespace qlora::cpu
