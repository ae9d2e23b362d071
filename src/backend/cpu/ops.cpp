// RMSNorm, RoPE, SwiGLU, residual add and embedding lookup on the CPU (OpenMP over rows).
#include "backend/cpu/ops.h"

#include <cmath>
#include <cstring>

#include "core/error.h"

namespace qlora::cpu {

void rmsnorm(const float* x, const float* weight, float* y, int64_t T, int64_t C, float eps) {
#pragma omp parallel for if (T > 1) schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = x + t * C;
    float* yr = y + t * C;
    double sum = 0.0;  // double: C up to 8192 terms, keeps the mean independent of order
    for (int64_t c = 0; c < C; ++c) sum += double(xr[c]) * xr[c];
    const float inv = 1.0f / std::sqrt(float(sum / double(C)) + eps);
    for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * inv * weight[c];
  }
}

void rope(float* x, const int64_t* positions, const float* inv_freq, int64_t T, int64_t n_heads, int64_t D) {
  const int64_t half = D / 2;
#pragma omp parallel for if (T > 1) schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    float cos_table[1024], sin_table[1024];
    QLORA_ASSERT(half <= 1024, "head_dim {} too large", D);
    for (int64_t i = 0; i < half; ++i) {
      // Angle in f32 like transformers: inv_freq (f32) times position (f32).
      const float angle = float(positions[t]) * inv_freq[i];
      cos_table[i] = std::cos(angle);
      sin_table[i] = std::sin(angle);
    }
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = x + (t * n_heads + h) * D;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cos_table[i] - b * sin_table[i];
        v[i + half] = b * cos_table[i] + a * sin_table[i];
      }
    }
  }
}

void swiglu(const float* gate, const float* up, float* out, int64_t n) {
#pragma omp parallel for if (n > 65536) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void add_row_bias(float* y, const float* bias, int64_t M, int64_t N) {
  if (!bias) return;
#pragma omp parallel for if (M * N > 65536)
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) y[m * N + n] += bias[n];
}

void add_inplace(float* x, const float* y, int64_t n) {
#pragma omp parallel for if (n > 65536) schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void embedding(const Tensor& table, const int32_t* ids, int64_t T, float* out) {
  const int64_t V = table.dim(0), C = table.dim(1);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t id = ids[t];
    if (id < 0 || id >= V) fail("embedding", "token id {} at position {} out of range; expected [0, {})", id, t, V);
    switch (table.dtype()) {
      case DType::F32: std::memcpy(out + t * C, table.data<float>() + id * C, size_t(C) * 4); break;
      case DType::BF16: convert_bf16_to_f32(table.data<uint16_t>() + id * C, out + t * C, size_t(C)); break;
      default: fail("embedding", "table dtype {} not supported; expected f32 or bf16", dtype_name(table.dtype()));
    }
  }
}

}  // namespace qlora::cpu
