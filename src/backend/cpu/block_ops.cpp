// Forward and backward of RMSNorm, RoPE, SwiGLU, embedding and the residual add on the CPU, for
// T = float (training) and T = double (gradient checks). OpenMP over rows; inner loops are plain or
// `omp simd` reductions so the compiler vectorises them.
// Tested in tests/grad/test_op_grads.cpp and tests/unit/test_train_ops.cpp.
#include "backend/cpu/block_ops.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/error.h"

namespace qlora::cpu {

namespace {

// Row-parallel loops over fewer elements than this run on one thread (fork/join costs ~µs).
constexpr int64_t kParallelMinElems = 32768;

}  // namespace

// ---- RMSNorm -------------------------------------------------------------------------------------

template <typename T>
void rmsnorm_forward(const T* x, const T* weight, T* y, T* rstd, int64_t N, int64_t C, double eps) {
#pragma omp parallel for if (N * C > kParallelMinElems) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const T* xr = x + n * C;
    T* yr = y + n * C;
    // Sum of squares in double, mean rounded to T, then 1/sqrt in T like HF's
    // torch.rsqrt(x.pow(2).mean(-1) + eps) on f32 hidden states.
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < C; ++c) sum += double(xr[c]) * double(xr[c]);
    const T inv = T(1) / std::sqrt(T(sum / double(C)) + T(eps));
    rstd[n] = inv;
    for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * inv * weight[c];
  }
}

// y_c = x_c r w_c with r = (mean(x²) + eps)^(-1/2), dr/dx_c = -r³ x_c / C, so
// dx_c = r w_c dy_c - x_c r³/C · Σ_i dy_i w_i x_i and dweight_c = Σ_rows dy_c x_c r.
template <typename T>
void rmsnorm_backward(const T* dy, const T* x, const T* weight, const T* rstd, T* dx, T* dweight, int64_t N,
                      int64_t C) {
  const bool parallel = N * C > kParallelMinElems;
  const int n_threads = parallel ? omp_get_max_threads() : 1;
  // dweight: one partial sum per thread, added in thread order so results are reproducible.
  std::vector<T> partial(dweight ? size_t(n_threads) * size_t(C) : 0, T(0));
#pragma omp parallel num_threads(n_threads) if (parallel)
  {
    T* dw_local = dweight ? partial.data() + size_t(omp_get_thread_num()) * size_t(C) : nullptr;
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const T* dyr = dy + n * C;
      const T* xr = x + n * C;
      T* dxr = dx + n * C;
      const T r = rstd[n];
      T dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < C; ++c) dot += dyr[c] * weight[c] * xr[c];
      const T coef = dot * r * r * r / T(C);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) dxr[c] += r * weight[c] * dyr[c] - xr[c] * coef;
      if (dw_local) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dw_local[c] += dyr[c] * xr[c] * r;
      }
    }
  }
  if (dweight)
    for (int t = 0; t < n_threads; ++t)
      for (int64_t c = 0; c < C; ++c) dweight[c] += partial[size_t(t) * size_t(C) + size_t(c)];
}

// ---- RoPE ----------------------------------------------------------------------------------------

namespace {

// Rotates pairs (i, i + D/2) of every head of x (N, n_heads, D) by sign · positions[n] · inv_freq[i].
// cos and sin are taken of the f32 angle in f32 (transformers builds its cos/sin cache in f32).
template <typename T>
void rope_rotate(T* x, const int64_t* positions, const float* inv_freq, int64_t N, int64_t n_heads, int64_t D,
                 bool inverse) {
  const int64_t half = D / 2;
  QLORA_ASSERT(half <= 1024, "head_dim {} too large", D);
#pragma omp parallel for if (N * n_heads * D > kParallelMinElems) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    T cos_table[1024], sin_table[1024];
    for (int64_t i = 0; i < half; ++i) {
      const float angle = float(positions[n]) * inv_freq[i];
      cos_table[i] = T(std::cos(angle));
      sin_table[i] = inverse ? -T(std::sin(angle)) : T(std::sin(angle));
    }
    for (int64_t h = 0; h < n_heads; ++h) {
      T* v = x + (n * n_heads + h) * D;
#pragma omp simd
      for (int64_t i = 0; i < half; ++i) {
        const T a = v[i], b = v[i + half];
        v[i] = a * cos_table[i] - b * sin_table[i];
        v[i + half] = b * cos_table[i] + a * sin_table[i];
      }
    }
  }
}

}  // namespace

template <typename T>
void rope_forward(T* x, const int64_t* positions, const float* inv_freq, int64_t N, int64_t n_heads, int64_t D) {
  rope_rotate(x, positions, inv_freq, N, n_heads, D, false);
}

// A rotation's transpose is the rotation by the opposite angle.
template <typename T>
void rope_backward(T* dx, const int64_t* positions, const float* inv_freq, int64_t N, int64_t n_heads, int64_t D) {
  rope_rotate(dx, positions, inv_freq, N, n_heads, D, true);
}

// ---- SwiGLU --------------------------------------------------------------------------------------

template <typename T>
void swiglu_forward(const T* gate, const T* up, T* out, int64_t n) {
#pragma omp parallel for if (n > kParallelMinElems) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T g = gate[i];
    out[i] = g / (T(1) + std::exp(-g)) * up[i];
  }
}

// silu(g) = g·s with s = sigmoid(g); silu'(g) = s·(1 + g·(1 - s)).
template <typename T>
void swiglu_backward(const T* dout, const T* gate, const T* up, T* dgate, T* dup, int64_t n) {
#pragma omp parallel for if (n > kParallelMinElems) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T g = gate[i];
    const T s = T(1) / (T(1) + std::exp(-g));
    const T d = dout[i];
    dgate[i] = d * up[i] * s * (T(1) + g * (T(1) - s));
    dup[i] = d * g * s;
  }
}

// ---- Embedding -----------------------------------------------------------------------------------

namespace {

void check_ids(const int32_t* ids, int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; ++n)
    if (ids[n] < 0 || ids[n] >= V)
      fail("embedding", "token id {} at position {} out of range; expected [0, {})", ids[n], n, V);
}

}  // namespace

template <typename T>
void embedding_forward(const Tensor& table, const int32_t* ids, int64_t N, T* out) {
  if (table.ndim() != 2) fail("embedding", "table must be 2-D (V, C), got {}", table.describe());
  const DType dt = table.dtype();
  const bool ok = dt == DType::F32 || dt == DType::BF16 || (dt == DType::F64 && std::is_same_v<T, double>);
  if (!ok)
    fail("embedding", "table dtype {} not supported for {} kernels; expected f32 or bf16{}", dtype_name(dt),
         std::is_same_v<T, double> ? "f64" : "f32", std::is_same_v<T, double> ? " or f64" : "");
  const int64_t V = table.dim(0), C = table.dim(1);
  check_ids(ids, N, V);
#pragma omp parallel for if (N * C > kParallelMinElems) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    T* o = out + n * C;
    const int64_t row = int64_t(ids[n]) * C;
    if (dt == DType::F32) {
      const float* src = table.data<float>() + row;
      for (int64_t c = 0; c < C; ++c) o[c] = T(src[c]);
    } else if (dt == DType::BF16) {
      const uint16_t* src = table.data<uint16_t>() + row;
      for (int64_t c = 0; c < C; ++c) o[c] = T(bf16_to_f32(src[c]));
    } else {
      const double* src = table.data<double>() + row;
      for (int64_t c = 0; c < C; ++c) o[c] = T(src[c]);
    }
  }
}

// Repeated ids make a row-parallel scatter racy, so threads split the columns instead: each owns a
// column range of every table row, which is race-free and deterministic.
template <typename T>
void embedding_backward(const T* dout, const int32_t* ids, int64_t N, int64_t C, T* dtable) {
  for (int64_t n = 0; n < N; ++n)
    if (ids[n] < 0) fail("embedding", "negative token id {} at position {}", ids[n], n);
#pragma omp parallel if (N * C > kParallelMinElems)
  {
    const int64_t n_threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t c0 = C * t / n_threads, c1 = C * (t + 1) / n_threads;
    for (int64_t n = 0; n < N; ++n) {
      T* dst = dtable + int64_t(ids[n]) * C;
      const T* src = dout + n * C;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
    }
  }
}

// ---- Residual add --------------------------------------------------------------------------------

template <typename T>
void add_inplace(T* x, const T* y, int64_t n) {
#pragma omp parallel for simd if (n > kParallelMinElems) schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

// ---- Instantiations ------------------------------------------------------------------------------

#define QLORA_TRAIN_OPS_INSTANTIATE(T)                                                                        \
  template void rmsnorm_forward<T>(const T*, const T*, T*, T*, int64_t, int64_t, double);                     \
  template void rmsnorm_backward<T>(const T*, const T*, const T*, const T*, T*, T*, int64_t, int64_t);        \
  template void rope_forward<T>(T*, const int64_t*, const float*, int64_t, int64_t, int64_t);                 \
  template void rope_backward<T>(T*, const int64_t*, const float*, int64_t, int64_t, int64_t);                \
  template void swiglu_forward<T>(const T*, const T*, T*, int64_t);                                           \
  template void swiglu_backward<T>(const T*, const T*, const T*, T*, T*, int64_t);                            \
  template void embedding_forward<T>(const Tensor&, const int32_t*, int64_t, T*);                             \
  template void embedding_backward<T>(const T*, const int32_t*, int64_t, int64_t, T*);                        \
  template void add_inplace<T>(T*, const T*, int64_t);

QLORA_TRAIN_OPS_INSTANTIATE(float)
QLORA_TRAIN_OPS_INSTANTIATE(double)
#undef QLORA_TRAIN_OPS_INSTANTIATE

}  // namespace qlora::cpu
