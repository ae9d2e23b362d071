// The LM head fused with cross-entropy on the CPU. Rows with a target are gathered into chunks of
// at most chunk_rows (rows with target -100 cost nothing: prompt tokens of SFT data are skipped),
// the chunk's logits (rows, V) come from one gemm, the softmax runs OpenMP-parallel over rows with
// the max subtracted (logsumexp = m + log Σ exp(l - m)), and the products dh = dlogits·W and
// dW += dlogitsᵀ·h are two more gemms. Losses are summed in double, in row order (reproducible).
// With bf16 compute the three products are bf16 × bf16 → f32 (gemm_bf16.h) and the logits are
// rounded to bf16 before the softmax: torch autocast's lm_head returns bf16 logits, and the loss
// upcasts them to f32 (transformers' loss_function calls logits.float()).
// Tested in tests/grad/test_op_grads.cpp and tests/unit/test_train_ops.cpp.
#include "backend/cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "backend/cpu/fast_exp.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/matmul.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/ignore_index.h"

namespace qlora::cpu {

namespace {

// Validates the arguments (before any parallel region: exceptions cannot leave one).
void check_inputs(const Tensor& w, const int32_t* targets, int64_t N, int64_t chunk_rows) {
  if (w.ndim() != 2) fail("cross_entropy", "lm head must be 2-D (V, C), got {}", w.describe());
  if (chunk_rows < 1) fail("cross_entropy", "chunk_rows must be >= 1, got {}", chunk_rows);
  const int64_t V = w.dim(0);
  for (int64_t n = 0; n < N; ++n)
    if (targets[n] != kIgnoreIndex && (targets[n] < 0 || targets[n] >= V))
      fail("cross_entropy", "target {} at row {} out of range; expected [0, {}) or {}", targets[n], n, V,
           kIgnoreIndex);
}

// Rows with a target, in order.
std::vector<int64_t> active_rows(const int32_t* targets, int64_t N) {
  std::vector<int64_t> rows;
  for (int64_t n = 0; n < N; ++n)
    if (targets[n] != kIgnoreIndex) rows.push_back(n);
  return rows;
}

// Turns each logits row (V) in place into softmax - onehot(target) scaled by grad_scale (when
// backward) and writes the row's loss = logsumexp - logit[target]. With round_logits the row is
// first rounded to bf16 (bf16 compute's logits), here where it is hot in cache.
template <typename T>
void softmax_rows(T* logits, const int32_t* targets, const int64_t* rows, int64_t n_rows, int64_t V, bool backward,
                  T grad_scale, T* losses, bool round_logits) {
#pragma omp parallel for if (n_rows * V > 32768) schedule(static)
  for (int64_t r = 0; r < n_rows; ++r) {
    T* row = logits + r * V;
    if constexpr (std::is_same_v<T, float>)
      if (round_logits) round_to_bf16(row, size_t(V));
    const int32_t target = targets[rows[r]];
    T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < V; ++j) m = std::max(m, row[j]);
    const T target_logit = row[target];
    T sum = 0;
    if (backward) {
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < V; ++j) {
        const T e = exp_t(row[j] - m);
        row[j] = e;
        sum += e;
      }
      const T scale = grad_scale / sum;
#pragma omp simd
      for (int64_t j = 0; j < V; ++j) row[j] *= scale;
      row[target] -= grad_scale;
    } else {
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < V; ++j) sum += exp_t(row[j] - m);
    }
    losses[r] = m + std::log(sum) - target_logit;
  }
}

// The head's three products in the compute precision: T's own (f32/f64 gemm, a bf16 head widened)
// or, with bf16 compute (T = float, a bf16 head), the bf16 kernels.
template <typename T>
struct HeadProducts {
  const Tensor& w;
  bool bf16 = false;
  cpu::Bf16Matrix wm{};
  CpuIsa isa = CpuIsa::Avx2;

  HeadProducts(const Tensor& head, bool bf16_compute) : w(head), bf16(bf16_compute) {
    if (!bf16) return;
    if (w.dtype() != DType::BF16) fail("cross_entropy", "bf16 compute needs a bf16 lm head; got {}", w.describe());
    wm = Bf16Matrix{w.dim(0), w.dim(1), w.data<uint16_t>(), w.dim(1), {}};
    isa = active_isa();
  }
  // logits (rows, V) = h · Wᵀ.
  void logits(const T* h, T* out, int64_t rows) const {
    if constexpr (std::is_same_v<T, float>) {
      if (bf16) {
        bf16_xwt(h, wm, out, rows, isa);  // softmax_rows rounds the logits to bf16
        return;
      }
    }
    matmul_xwt<T>(h, w, out, rows);
  }
  // dh (rows, C) += dlogits · W.
  void dh(const T* dlogits, T* out, int64_t rows) const {
    if constexpr (std::is_same_v<T, float>)
      if (bf16) return bf16_dy_w_acc(dlogits, wm, out, rows, isa);
    matmul_dy_w_acc<T>(dlogits, w, out, rows);
  }
  // dW (V, C) += dlogitsᵀ · h.
  void dw(const T* dlogits, const T* h, T* out, int64_t rows) const {
    if constexpr (std::is_same_v<T, float>)
      if (bf16) return bf16_dyt_x_acc(dlogits, h, out, rows, w.dim(0), w.dim(1), isa);
    matmul_dyt_x_acc<T>(dlogits, h, out, rows, w.dim(0), w.dim(1));
  }
};

// Shared body: with dh == nullptr only the losses are computed.
template <typename T>
CrossEntropyResult run(const T* h, const Tensor& w, const int32_t* targets, int64_t N, T* row_losses, T grad_scale,
                       T* dh, T* dw, int64_t chunk_rows, bool bf16) {
  check_inputs(w, targets, N, chunk_rows);
  const HeadProducts<T> head(w, bf16);
  const int64_t V = w.dim(0), C = w.dim(1);
  const bool backward = dh != nullptr;
  if (row_losses) std::fill(row_losses, row_losses + N, T(0));
  if (dh) std::memset(dh, 0, size_t(N * C) * sizeof(T));
  const std::vector<int64_t> rows = active_rows(targets, N);
  const int64_t n_active = int64_t(rows.size());
  const int64_t chunk = std::min(chunk_rows, std::max<int64_t>(n_active, 1));
  std::vector<T> h_chunk(size_t(chunk * C)), dh_chunk(backward ? size_t(chunk * C) : 0);
  std::vector<T> logits(size_t(chunk * V)), losses(static_cast<size_t>(chunk));
  CrossEntropyResult result;
  for (int64_t r0 = 0; r0 < n_active; r0 += chunk) {
    const int64_t n_rows = std::min(chunk, n_active - r0);
    const int64_t* chunk_ids = rows.data() + r0;
    // Gather the chunk's rows of h (contiguous runs of targets are the common case; a copy is cheap
    // next to the (rows, V, C) gemms).
#pragma omp parallel for if (n_rows * C > 65536) schedule(static)
    for (int64_t r = 0; r < n_rows; ++r) std::memcpy(&h_chunk[size_t(r * C)], h + chunk_ids[r] * C, size_t(C) * sizeof(T));
    head.logits(h_chunk.data(), logits.data(), n_rows);  // (rows, V)
    softmax_rows<T>(logits.data(), targets, chunk_ids, n_rows, V, backward, grad_scale, losses.data(), bf16);
    for (int64_t r = 0; r < n_rows; ++r) {
      result.loss_sum += double(losses[size_t(r)]);
      if (row_losses) row_losses[chunk_ids[r]] = losses[size_t(r)];
    }
    if (backward) {
      std::fill(dh_chunk.begin(), dh_chunk.begin() + n_rows * C, T(0));
      head.dh(logits.data(), dh_chunk.data(), n_rows);  // (rows, C) = dlogits · W
#pragma omp parallel for if (n_rows * C > 65536) schedule(static)
      for (int64_t r = 0; r < n_rows; ++r)
        std::memcpy(dh + chunk_ids[r] * C, &dh_chunk[size_t(r * C)], size_t(C) * sizeof(T));
      if (dw) head.dw(logits.data(), h_chunk.data(), dw, n_rows);  // (V, C) += dlogitsᵀ · h
    }
  }
  result.count = n_active;
  return result;
}

}  // namespace

template <typename T>
CrossEntropyResult cross_entropy_forward(const T* h, const Tensor& w, const int32_t* targets, int64_t N,
                                         T* row_losses, int64_t chunk_rows) {
  return run<T>(h, w, targets, N, row_losses, T(1), nullptr, nullptr, chunk_rows, false);
}

template <typename T>
CrossEntropyResult cross_entropy_forward_backward(const T* h, const Tensor& w, const int32_t* targets, int64_t N,
                                                  T grad_scale, T* dh, T* dw, int64_t chunk_rows) {
  if (!dh) fail("cross_entropy", "dh must not be null in cross_entropy_forward_backward");
  return run<T>(h, w, targets, N, nullptr, grad_scale, dh, dw, chunk_rows, false);
}

CrossEntropyResult cross_entropy_forward_bf16(const float* h, const Tensor& w, const int32_t* targets, int64_t N,
                                              float* row_losses, int64_t chunk_rows) {
  return run<float>(h, w, targets, N, row_losses, 1.0f, nullptr, nullptr, chunk_rows, true);
}

CrossEntropyResult cross_entropy_forward_backward_bf16(const float* h, const Tensor& w, const int32_t* targets,
                                                       int64_t N, float grad_scale, float* dh, float* dw,
                                                       int64_t chunk_rows) {
  if (!dh) fail("cross_entropy", "dh must not be null in cross_entropy_forward_backward_bf16");
  return run<float>(h, w, targets, N, nullptr, grad_scale, dh, dw, chunk_rows, true);
}

template CrossEntropyResult cross_entropy_forward<float>(const float*, const Tensor&, const int32_t*, int64_t,
                                                         float*, int64_t);
template CrossEntropyResult cross_entropy_forward<double>(const double*, const Tensor&, const int32_t*, int64_t,
                                                          double*, int64_t);
template CrossEntropyResult cross_entropy_forward_backward<float>(const float*, const Tensor&, const int32_t*,
                                                                  int64_t, float, float*, float*, int64_t);
template CrossEntropyResult cross_entropy_forward_backward<double>(const double*, const Tensor&, const int32_t*,
                                                                   int64_t, double, double*, double*, int64_t);

}  // namespace qlora::cpu
