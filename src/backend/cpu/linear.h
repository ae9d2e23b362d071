// Linear layers on the CPU: y (M, N) = x (M, K) · Wᵀ (+ bias), W stored (N, K) as PyTorch does,
// in f32 or bf16. f32 goes straight to OpenBLAS sgemm; bf16 is widened to f32 in row panels that
// feed sgemm (large M) or dotted directly with AVX-512 (small M, decode). Accumulation is f32.
// Tested in tests/unit/test_cpu_kernels.cpp against a plain-loop reference.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace qlora::cpu {

// y = x · wᵀ + bias; bias may be null. w is (N, K) f32.
void linear_f32(const float* x, const float* w, const float* bias, float* y, int64_t M, int64_t N, int64_t K);
// Same with w (N, K) in bf16.
void linear_bf16(const float* x, const uint16_t* w, const float* bias, float* y, int64_t M, int64_t N,
                 int64_t K);
// Dispatches on w's dtype (f32 or bf16); w must be 2-D (N, K).
void linear(const float* x, const Tensor& w, const float* bias, float* y, int64_t M);

}  // namespace qlora::cpu
