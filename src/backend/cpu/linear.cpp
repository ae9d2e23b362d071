// CPU linear layers: OpenBLAS for f32, panel-widening for bf16 weights.
#include "backend/cpu/linear.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "backend/cpu/ops.h"
#include "core/error.h"

namespace qlora::cpu {

namespace {

// Widen 16 bf16 values to f32 (a bf16 is the top half of an f32).
#if defined(__AVX512F__)
inline __m512 load_bf16x16(const uint16_t* p) {
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
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

// Below this many rows of x, re-reading W per row is cheaper than widening W into a panel.
constexpr int64_t kDirectDotMaxRows = 4;
// Rows of W widened at a time: 256 x K f32 stays in L2 for K up to ~4096.
constexpr int64_t kPanelRows = 256;

}  // namespace

void linear_f32(const float* x, const float* w, const float* bias, float* y, int64_t M, int64_t N, int64_t K) {
  if (M == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, int(N), int(K), 1.0f, w, int(K), x, 1, 0.0f, y, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.0f, x, int(K), w, int(K),
                0.0f, y, int(N));
  }
  add_row_bias(y, bias, M, N);
}

void linear_bf16(const float* x, const uint16_t* w, const float* bias, float* y, int64_t M, int64_t N,
                 int64_t K) {
  if (M <= kDirectDotMaxRows) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t m = 0; m < M; ++m) y[m * N + n] = dot_f32_bf16(x + m * K, w + n * K, K);
    add_row_bias(y, bias, M, N);
    return;
  }
  std::vector<float> panel(static_cast<size_t>(std::min(N, kPanelRows) * K));
  for (int64_t n0 = 0; n0 < N; n0 += kPanelRows) {
    const int64_t rows = std::min(kPanelRows, N - n0);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) convert_bf16_to_f32(w + (n0 + r) * K, panel.data() + r * K, size_t(K));
    // Write the panel's columns straight into y via its leading dimension N.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(rows), int(K), 1.0f, x, int(K), panel.data(),
                int(K), 0.0f, y + n0, int(N));
  }
  add_row_bias(y, bias, M, N);
}

void linear(const float* x, const Tensor& w, const float* bias, float* y, int64_t M) {
  QLORA_ASSERT(w.ndim() == 2, "linear weight must be 2-D, got {}", w.describe());
  const int64_t N = w.dim(0), K = w.dim(1);
  switch (w.dtype()) {
    case DType::F32: return linear_f32(x, w.data<float>(), bias, y, M, N, K);
    case DType::BF16: return linear_bf16(x, w.data<uint16_t>(), bias, y, M, N, K);
    default: fail("linear", "weight dtype {} not supported; expected f32 or bf16", dtype_name(w.dtype()));
  }
}

}  // namespace qlora::cpu
