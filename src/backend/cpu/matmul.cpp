// Dense matrix products (forward y = x·Wᵀ and both backward products) on OpenBLAS. bf16 weights
// are widened to f32 in row panels of kPanelRows rows so sgemm always sees f32, except for a few
// rows (decode), where AVX-512 dots read the bf16 weight once; f64 (T = double) goes straight to
// dgemm. Tested in tests/unit/test_train_ops.cpp and tests/grad/test_op_grads.cpp.
#include "backend/cpu/matmul.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "backend/cpu/gemm_bf16.h"
#include "core/error.h"

namespace qlora::cpu {

namespace {

// Rows of W widened at a time: 256 x K f32 stays in L2 for K up to ~4096.
constexpr int64_t kPanelRows = 256;
// Up to this many rows of x, re-reading a bf16 W per row is cheaper than widening W into panels.
constexpr int64_t kDirectDotMaxRows = 4;

// Widen 16 bf16 values to f32 (a bf16 is the top half of an f32).
#if defined(__AVX512F__)
inline __m512 load_bf16x16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
#endif

float dot_f32_bf16(const float* x, const uint16_t* w, int64_t K) {
  int64_t k = 0;
  float sum = 0.0f;
#if defined(__AVX512F__)
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (; k + 32 <= K; k += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), load_bf16x16(w + k), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 16), load_bf16x16(w + k + 16), acc1);
  }
  for (; k + 16 <= K; k += 16) acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), load_bf16x16(w + k), acc0);
  sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#endif
  for (; k < K; ++k) sum += x[k] * bf16_to_f32(w[k]);
  return sum;
}

CBLAS_TRANSPOSE op(bool trans) { return trans ? CblasTrans : CblasNoTrans; }

// c = beta · c for an empty inner dimension (BLAS rejects a leading dimension of 0).
template <typename T>
void scale_only(int64_t m, int64_t n, T beta, T* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
}

// Widens rows [o0, o0 + rows) of a bf16 (O, K) weight into a reused per-thread f32 buffer.
const float* widen_panel(const uint16_t* w, int64_t o0, int64_t rows, int64_t K) {
  thread_local std::vector<float> panel;
  if (panel.size() < size_t(rows * K)) panel.resize(size_t(rows * K));
  float* p = panel.data();
#pragma omp parallel for if (rows * K > 65536) schedule(static)
  for (int64_t r = 0; r < rows; ++r) convert_bf16_to_f32(w + (o0 + r) * K, p + r * K, size_t(K));
  return p;
}

// Checks w is 2-D and its dtype fits T: f32/bf16 for float, f64 for double.
template <typename T>
void check_weight(const Tensor& w, const char* what) {
  if (w.ndim() != 2) fail("linear", "{}: weight must be 2-D (O, K), got {}", what, w.describe());
  if constexpr (std::is_same_v<T, double>) {
    if (w.dtype() != DType::F64)
      fail("linear", "{}: weight dtype {} does not match f64 kernels; expected f64", what, dtype_name(w.dtype()));
  } else {
    if (w.dtype() != DType::F32 && w.dtype() != DType::BF16)
      fail("linear", "{}: weight dtype {} not supported by f32 kernels; expected f32 or bf16", what,
           dtype_name(w.dtype()));
  }
}

// Calls fn(o0, rows, panel) for each panel of kPanelRows rows of a bf16 weight (O, K), widened to f32.
template <typename Fn>
void for_each_widened_panel(const Tensor& w, Fn&& fn) {
  const int64_t O = w.dim(0), K = w.dim(1);
  const uint16_t* w16 = w.data<uint16_t>();
  for (int64_t o0 = 0; o0 < O; o0 += kPanelRows) {
    const int64_t rows = std::min(kPanelRows, O - o0);
    fn(o0, rows, widen_panel(w16, o0, rows, K));
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
void matmul_xwt(const T* x, const Tensor& w, T* y, int64_t N) {
  check_weight<T>(w, "matmul_xwt");
  const int64_t O = w.dim(0), K = w.dim(1);
  if constexpr (std::is_same_v<T, float>) {
    if (w.dtype() == DType::BF16) {
      if (N <= kDirectDotMaxRows) {  // decode: read W once, no widened copy
        const uint16_t* w16 = w.data<uint16_t>();
#pragma omp parallel for schedule(static)
        for (int64_t o = 0; o < O; ++o)
          for (int64_t n = 0; n < N; ++n) y[n * O + o] = dot_f32_bf16(x + n * K, w16 + o * K, K);
        return;
      }
      // The panel's outputs are columns [o0, o0 + rows) of y: leading dimension O.
      for_each_widened_panel(w, [&](int64_t o0, int64_t rows, const float* panel) {
        gemm<float>(false, true, N, rows, K, 1.0f, x, K, panel, K, 0.0f, y + o0, O);
      });
      return;
    }
    if (N == 1 && O > 0 && K > 0) {  // decode: sgemv streams W once without packing it
      cblas_sgemv(CblasRowMajor, CblasNoTrans, int(O), int(K), 1.0f, w.data<float>(), int(K), x, 1, 0.0f, y, 1);
      return;
    }
  }
  gemm<T>(false, true, N, O, K, T(1), x, K, w.data<T>(), K, T(0), y, O);
}

template <typename T>
void matmul_dy_w_acc(const T* dy, const Tensor& w, T* dx, int64_t N) {
  check_weight<T>(w, "matmul_dy_w_acc");
  const int64_t O = w.dim(0), K = w.dim(1);
  if constexpr (std::is_same_v<T, float>) {
    if (w.dtype() == DType::BF16) {
      // dx += dy[:, o0:o0+rows] · panel: a sum over the panels of W's rows.
      for_each_widened_panel(w, [&](int64_t o0, int64_t rows, const float* panel) {
        gemm<float>(false, false, N, K, rows, 1.0f, dy + o0, O, panel, K, 1.0f, dx, K);
      });
      return;
    }
  }
  gemm<T>(false, false, N, K, O, T(1), dy, O, w.data<T>(), K, T(1), dx, K);
}

template <typename T>
void matmul_dyt_x_acc(const T* dy, const T* x, T* dw, int64_t N, int64_t O, int64_t K) {
  if (N == 0) return;
  gemm<T>(true, false, O, K, N, T(1), dy, O, x, K, T(1), dw, K);
}

namespace {

Bf16Matrix bf16_weight(const Tensor& w, const char* op) {
  if (w.ndim() != 2 || w.dtype() != DType::BF16)
    fail("linear", "{}: bf16 products need a 2-D bf16 weight (O, K); got {}", op, w.describe());
  return Bf16Matrix{w.dim(0), w.dim(1), w.data<uint16_t>(), w.dim(1), {}};
}

}  // namespace

void matmul_xwt_bf16(const float* x, const Tensor& w, float* y, int64_t N) {
  const Bf16Matrix m = bf16_weight(w, "matmul_xwt_bf16");
  if (N <= kDirectDotMaxRows) {  // decode: the bf16 dot reads W once; same exact products
    matmul_xwt<float>(bf16_rounded_copy(x, N * m.cols).data(), w, y, N);
    return;
  }
  bf16_xwt(x, m, y, N, active_isa());
}

void matmul_dy_w_acc_bf16(const float* dy, const Tensor& w, float* dx, int64_t N) {
  bf16_dy_w_acc(dy, bf16_weight(w, "matmul_dy_w_acc_bf16"), dx, N, active_isa());
}

void matmul_dyt_x_acc_bf16(const float* dy, const float* x, float* dw, int64_t N, int64_t O, int64_t K) {
  bf16_dyt_x_acc(dy, x, dw, N, O, K, active_isa());
}

template void matmul_xwt<float>(const float*, const Tensor&, float*, int64_t);
template void matmul_xwt<double>(const double*, const Tensor&, double*, int64_t);
template void matmul_dy_w_acc<float>(const float*, const Tensor&, float*, int64_t);
template void matmul_dy_w_acc<double>(const double*, const Tensor&, double*, int64_t);
template void matmul_dyt_x_acc<float>(const float*, const float*, float*, int64_t, int64_t, int64_t);
template void matmul_dyt_x_acc<double>(const double*, const double*, double*, int64_t, int64_t, int64_t);

}  // namespace qlora::cpu
