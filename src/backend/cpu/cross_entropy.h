// The LM head fused with cross-entropy, chunked over rows so that at most (chunk, V) logits exist
// at once (never (N, V)): for each chunk, logits = h·Wᵀ, loss = logsumexp(logits) - logits[target],
// dlogits = (softmax - onehot(target)) · grad_scale, dh = dlogits·W, dW += dlogitsᵀ·h.
// targets (N): the label each row predicts (already shifted), kIgnoreIndex (-100) = ignored (no loss, no grad).
// h (N, C); w (V, C) a Tensor in f32/bf16 (T = float) or f64 (T = double).
// Tested in tests/grad/test_op_grads.cpp and tests/unit/test_train_ops.cpp (vs log_softmax loops).
#pragma once
#include <cstdint>

#include "backend/backend.h"
#include "core/tensor.h"

namespace qlora::cpu {

// Loss only (evaluation). row_losses (N) may be null; ignored rows get 0.
template <typename T>
CrossEntropyResult cross_entropy_forward(const T* h, const Tensor& w, const int32_t* targets, int64_t N,
                                         T* row_losses = nullptr, int64_t chunk_rows = kLossChunkRows);
// Loss and gradients: dh (N, C) written (ignored rows get 0); dw (V, C) += (may be null: frozen head).
template <typename T>
CrossEntropyResult cross_entropy_forward_backward(const T* h, const Tensor& w, const int32_t* targets, int64_t N,
                                                  T grad_scale, T* dh, T* dw, int64_t chunk_rows = kLossChunkRows);

// bf16 compute (w (V, C) bf16, h already bf16-rounded): the products are bf16 × bf16 → f32 and the
// logits are rounded to bf16 before the softmax, as torch autocast's bf16 lm_head output is.
CrossEntropyResult cross_entropy_forward_bf16(const float* h, const Tensor& w, const int32_t* targets, int64_t N,
                                              float* row_losses = nullptr, int64_t chunk_rows = kLossChunkRows);
CrossEntropyResult cross_entropy_forward_backward_bf16(const float* h, const Tensor& w, const int32_t* targets,
                                                       int64_t N, float grad_scale, float* dh, float* dw,
                                                       int64_t chunk_rows = kLossChunkRows);

}  // namespace qlora::cpu
