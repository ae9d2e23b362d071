// LoRA element-wise kernels. See lora_ops.h.
#include "backend/cpu/lora_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/matmul.h"
#include "core/error.h"
#include "core/rng.h"

namespace qlora::cpu {
namespace {

// Elements above which element-wise loops run in parallel (below it the fork costs more).
constexpr int64_t kParallelMin = 65536;
// Rows of W merged at a time: 64 x K doubles of delta stay in L2/L3.
constexpr int64_t kMergeTileRows = 64;

}  // namespace

void dropout_mask(uint64_t seed, double p, int64_t N, int64_t K, uint8_t* keep) {
  const double t = std::min(std::round(p * 4294967296.0), 4294967295.0);
  const uint32_t threshold = uint32_t(t);
#pragma omp parallel for if (N * K > kParallelMin) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    Rng rng(mix64(seed + uint64_t(n) * 0xd1b54a32d192ed03ull));
    uint8_t* row = keep + n * K;
    int64_t k = 0;
    for (; k + 1 < K; k += 2) {
      const uint64_t u = rng.next_u64();
      row[k] = uint32_t(u) >= threshold;
      row[k + 1] = uint32_t(u >> 32) >= threshold;
    }
    if (k < K) row[k] = uint32_t(rng.next_u64()) >= threshold;
  }
}

template <typename T>
void dropout_apply(const T* x, const uint8_t* keep, double p, T* out, int64_t n) {
  const T inv_keep = T(1.0 / (1.0 - p));
#pragma omp parallel for if (n > kParallelMin) schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = keep[i] ? x[i] * inv_keep : T(0);
}

template <typename T>
void dropout_backward_acc(const T* dy, const uint8_t* keep, double p, T* dx, int64_t n) {
  const T inv_keep = T(1.0 / (1.0 - p));
#pragma omp parallel for if (n > kParallelMin) schedule(static)
  for (int64_t i = 0; i < n; ++i)
    if (keep[i]) dx[i] += dy[i] * inv_keep;
}

template <typename T>
void add_bias(const Tensor& bias, T* y, int64_t N, int64_t O) {
  std::vector<T> b(static_cast<size_t>(O));
  switch (bias.dtype()) {
    case DType::F32: std::copy_n(bias.data<float>(), O, b.begin()); break;
    case DType::BF16:
      for (int64_t o = 0; o < O; ++o) b[size_t(o)] = T(bf16_to_f32(bias.data<uint16_t>()[o]));
      break;
    case DType::F64: std::copy_n(bias.data<double>(), O, b.begin()); break;
    default: fail("linear", "add_bias: bias dtype {} not supported; expected f32, bf16 or f64", dtype_name(bias.dtype()));
  }
#pragma omp parallel for if (N * O > kParallelMin) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) y[n * O + o] += b[size_t(o)];
}

template <typename T>
void add_column_sums(const T* dy, T* out, int64_t N, int64_t O) {
  constexpr int64_t kCols = 256;
#pragma omp parallel for if (N * O > kParallelMin) schedule(static)
  for (int64_t o0 = 0; o0 < O; o0 += kCols) {
    const int64_t nc = std::min(kCols, O - o0);
    double acc[kCols] = {};
    for (int64_t n = 0; n < N; ++n) {
      const T* row = dy + n * O + o0;
      for (int64_t j = 0; j < nc; ++j) acc[j] += row[j];
    }
    for (int64_t j = 0; j < nc; ++j) out[o0 + j] += T(acc[j]);
  }
}

void merge_lora(float* w, const double* base64, const double* A, const double* B, int64_t O, int64_t K, int64_t R,
                double scale) {
  std::vector<double> delta(size_t(std::min(kMergeTileRows, O) * K));
  for (int64_t o0 = 0; o0 < O; o0 += kMergeTileRows) {
    const int64_t nr = std::min(kMergeTileRows, O - o0);
    gemm<double>(false, false, nr, K, R, scale, B + o0 * R, R, A, K, 0.0, delta.data(), K);
    const int64_t n = nr * K;
    float* wt = w + o0 * K;
    const double* w64 = base64 ? base64 + o0 * K : nullptr;
#pragma omp parallel for if (n > kParallelMin) schedule(static)
    for (int64_t i = 0; i < n; ++i) wt[i] = float((w64 ? w64[i] : double(wt[i])) + delta[size_t(i)]);
  }
}

#define QLORA_LORA_OPS_INSTANTIATE(T)                                                          \
  template void dropout_apply<T>(const T*, const uint8_t*, double, T*, int64_t);                \
  template void dropout_backward_acc<T>(const T*, const uint8_t*, double, T*, int64_t);         \
  template void add_bias<T>(const Tensor&, T*, int64_t, int64_t);                               \
  template void add_column_sums<T>(const T*, T*, int64_t, int64_t);

QLORA_LORA_OPS_INSTANTIATE(float)
QLORA_LORA_OPS_INSTANTIATE(double)
#undef QLORA_LORA_OPS_INSTANTIATE

}  // namespace qlora::cpu
