// The element-wise pieces of the LoRA linear layer on the CPU (OpenMP above 64K elements): dropout
// masks regenerated from a seed instead of stored, inverted dropout and its backward, bias rows,
// column sums for bias gradients, and the f64 merge W + scale·B·A. For T = float and double.
// Legend: N rows (B*T), K input features, O output features, R rank.
// Tested in tests/unit/test_lora.cpp (dropout statistics and thread independence, merge) and
// tests/grad/test_lora_grads.cpp (finite differences through the layer).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace qlora::cpu {

// keep (N, K) = 1 where the element is kept. Row n draws from its own Rng(mix64(seed + n·stride)),
// so the mask depends only on (seed, n, k), not on the thread count. Each 64-bit draw gives two
// 32-bit uniforms u; an element is kept when u >= round(p·2³²), i.e. with probability 1 - p.
void dropout_mask(uint64_t seed, double p, int64_t N, int64_t K, uint8_t* keep);
// out (n) = x ⊙ keep / (1 - p).
template <typename T>
void dropout_apply(const T* x, const uint8_t* keep, double p, T* out, int64_t n);
// dx (n) += dy ⊙ keep / (1 - p).
template <typename T>
void dropout_backward_acc(const T* dy, const uint8_t* keep, double p, T* dx, int64_t n);
// y (N, O) += bias (O) per row; bias f32, bf16 or f64.
template <typename T>
void add_bias(const Tensor& bias, T* y, int64_t N, int64_t O);
// out (O) += column sums of dy (N, O), accumulated in double.
template <typename T>
void add_column_sums(const T* dy, T* out, int64_t N, int64_t O);
// w (O, K) = f32((base64 ? base64 : w) + scale · B·A), the delta formed in f64 tile by tile.
void merge_lora(float* w, const double* base64, const double* A, const double* B, int64_t O, int64_t K, int64_t R,
                double scale);

}  // namespace qlora::cpu
