// The LM head fused with cross-entropy on the CPU. Rows with a target are gathered into chunks of
// at most chunk_rows (rows with target -100 cost nothing: prompt tokens of SFT data are skipped),
// the chunk's logits (rows, V) come from one gemm, the softmax runs OpenMP-parallel over rows with
// the max subtracted (logsumexp = m + log Σ exp(l - m)), and the products dh = dlogits·W and
// dW += dlogitsᵀ·h are two more gemms. Losses are summed in double, in row order (reproducible).
// Tested in tests/grad/test_op_grads.cpp and tests/unit/test_train_ops.cpp.
#include "backend/cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backend/cpu/fast_exp.h"
#include "backend/cpu/matmul.h"
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
// backward) and writes the row's loss = logsumexp - logit[target].
template <typename T>
void softmax_rows(T* logits, const int32_t* targets, const int64_t* rows, int64_t n_rows, int64_t V, bool backward,
                  T grad_scale, T* losses) {
#pragma omp parallel for if (n_rows * V > 32768) schedule(static)
  for (int64_t r = 0; r < n_rows; ++r) {
    T* row = logits + r * V;
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

// Shared body: with dh == nullptr only the losses are computed.
template <typename T>
CrossEntropyResult run(const T* h, const Tensor& w, const int32_t* targets, int64_t N, T* row_losses, T grad_scale,
                       T* dh, T* dw, int64_t chunk_rows) {
  check_inputs(w, targets, N, chunk_rows);
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
    matmul_xwt<T>(h_chunk.data(), w, logits.data(), n_rows);  // (rows, V)
    softmax_rows<T>(logits.data(), targets, chunk_ids, n_rows, V, backward, grad_scale, losses.data());
    for (int64_t r = 0; r < n_rows; ++r) {
      result.loss_sum += double(losses[size_t(r)]);
      if (row_losses) row_losses[chunk_ids[r]] = losses[size_t(r)];
    }
    if (backward) {
      std::fill(dh_chunk.begin(), dh_chunk.begin() + n_rows * C, T(0));
      matmul_dy_w_acc<T>(logits.data(), w, dh_chunk.data(), n_rows);  // (rows, C) = dlogits · W
#pragma omp parallel for if (n_rows * C > 65536) schedule(static)
      for (int64_t r = 0; r < n_rows; ++r)
        std::memcpy(dh + chunk_ids[r] * C, &dh_chunk[size_t(r * C)], size_t(C) * sizeof(T));
      if (dw) matmul_dyt_x_acc<T>(logits.data(), h_chunk.data(), dw, n_rows, V, C);  // (V, C) += dlogitsᵀ · h
    }
  }
  result.count = n_active;
  return result;
}

}  // namespace

template <typename T>
CrossEntropyResult cross_entropy_forward(const T* h, const Tensor& w, const int32_t* targets, int64_t N,
                                         T* row_losses, int64_t chunk_rows) {
  return run<T>(h, w, targets, N, row_losses, T(1), nullptr, nullptr, chunk_rows);
}

template <typename T>
CrossEntropyResult cross_entropy_forward_backward(const T* h, const Tensor& w, const int32_t* targets, int64_t N,
                                                  T grad_scale, T* dh, T* dw, int64_t chunk_rows) {
  if (!dh) fail("cross_entropy", "dh must not be null in cross_entropy_forward_backward");
  return run<T>(h, w, targets, N, nullptr, grad_scale, dh, dw, chunk_rows);
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
