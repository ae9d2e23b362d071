// Dense matrix products of training (forward y = x·Wᵀ and both backward products) on OpenBLAS.
// bf16 weights are widened to f32 in row panels of kPanelRows rows (as linear.cpp does) so sgemm
// always sees f32; f64 (T = double) goes straight to dgemm. Tested in tests/unit/test_train_ops.cpp
// and tests/grad/test_op_grads.cpp.
#include "backend/cpu/linear_train.h"

#include <cblas.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "core/error.h"

namespace qlora::cpu {

namespace {

// Rows of W widened at a time: 256 x K f32 stays in L2 for K up to ~4096.
constexpr int64_t kPanelRows = 256;

CBLAS_TRANSPOSE op(bool trans) { return trans ? CblasTrans : CblasNoTrans; }

// c = beta · c for an empty inner dimension (BLAS rejects a leading dimension of 0).
template <typename T>
void scale_only(int64_t m, int64_t n, T beta, T* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
}

// Widens rows [n0, n0 + rows) of a bf16 (N, K) weight into a reused per-thread f32 buffer.
const float* widen_panel(const uint16_t* w, int64_t n0, int64_t rows, int64_t K) {
  thread_local std::vector<float> panel;
  if (panel.size() < size_t(rows * K)) panel.resize(size_t(rows * K));
  float* p = panel.data();
#pragma omp parallel for if (rows * K > 65536) schedule(static)
  for (int64_t r = 0; r < rows; ++r) convert_bf16_to_f32(w + (n0 + r) * K, p + r * K, size_t(K));
  return p;
}

// Checks w is 2-D and its dtype fits T: f32/bf16 for float, f64 for double.
template <typename T>
void check_weight(const Tensor& w, const char* what) {
  if (w.ndim() != 2) fail("linear", "{}: weight must be 2-D (N, K), got {}", what, w.describe());
  if constexpr (std::is_same_v<T, double>) {
    if (w.dtype() != DType::F64)
      fail("linear", "{}: weight dtype {} does not match f64 kernels; expected f64", what, dtype_name(w.dtype()));
  } else {
    if (w.dtype() != DType::F32 && w.dtype() != DType::BF16)
      fail("linear", "{}: weight dtype {} not supported by f32 kernels; expected f32 or bf16", what,
           dtype_name(w.dtype()));
  }
}

// Calls fn(n0, rows, panel) for each panel of kPanelRows rows of a bf16 weight (N, K), widened to f32.
template <typename Fn>
void for_each_widened_panel(const Tensor& w, Fn&& fn) {
  const int64_t N = w.dim(0), K = w.dim(1);
  const uint16_t* w16 = w.data<uint16_t>();
  for (int64_t n0 = 0; n0 < N; n0 += kPanelRows) {
    const int64_t rows = std::min(kPanelRows, N - n0);
    fn(n0, rows, widen_panel(w16, n0, rows, K));
  }
}

}  // namespace

template <>
void gemm<float>(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                 int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) return scale_only(m, n, beta, c, ldc);
  cblas_sgemm(CblasRowMajor, op(trans_a), op(trans_b), int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb), beta,
              c, int(ldc));
}

template <>
void gemm<double>(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
                  int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) return scale_only(m, n, beta, c, ldc);
  cblas_dgemm(CblasRowMajor, op(trans_a), op(trans_b), int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb), beta,
              c, int(ldc));
}

template <typename T>
void matmul_xwt(const T* x, const Tensor& w, T* y, int64_t M) {
  check_weight<T>(w, "matmul_xwt");
  const int64_t N = w.dim(0), K = w.dim(1);
  if constexpr (std::is_same_v<T, float>) {
    if (w.dtype() == DType::BF16) {
      // The panel's outputs are columns [n0, n0 + rows) of y: leading dimension N.
      for_each_widened_panel(w, [&](int64_t n0, int64_t rows, const float* panel) {
        gemm<float>(false, true, M, rows, K, 1.0f, x, K, panel, K, 0.0f, y + n0, N);
      });
      return;
    }
  }
  gemm<T>(false, true, M, N, K, T(1), x, K, w.data<T>(), K, T(0), y, N);
}

template <typename T>
void matmul_dy_w_acc(const T* dy, const Tensor& w, T* dx, int64_t M) {
  check_weight<T>(w, "matmul_dy_w_acc");
  const int64_t N = w.dim(0), K = w.dim(1);
  if constexpr (std::is_same_v<T, float>) {
    if (w.dtype() == DType::BF16) {
      // dx += dy[:, n0:n0+rows] · panel: a sum over the panels of W's rows.
      for_each_widened_panel(w, [&](int64_t n0, int64_t rows, const float* panel) {
        gemm<float>(false, false, M, K, rows, 1.0f, dy + n0, N, panel, K, 1.0f, dx, K);
      });
      return;
    }
  }
  gemm<T>(false, false, M, K, N, T(1), dy, N, w.data<T>(), K, T(1), dx, K);
}

template <typename T>
void matmul_dyt_x_acc(const T* dy, const T* x, T* dw, int64_t M, int64_t N, int64_t K) {
  if (M == 0) return;
  gemm<T>(true, false, N, K, M, T(1), dy, N, x, K, T(1), dw, K);
}

template void matmul_xwt<float>(const float*, const Tensor&, float*, int64_t);
template void matmul_xwt<double>(const double*, const Tensor&, double*, int64_t);
template void matmul_dy_w_acc<float>(const float*, const Tensor&, float*, int64_t);
template void matmul_dy_w_acc<double>(const double*, const Tensor&, double*, int64_t);
template void matmul_dyt_x_acc<float>(const float*, const float*, float*, int64_t, int64_t, int64_t);
template void matmul_dyt_x_acc<double>(const double*, const double*, double*, int64_t, int64_t, int64_t);

}  // namespace qlora::cpu
