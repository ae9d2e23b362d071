// Element-wise and row-wise CPU kernels of the Llama block: RMSNorm, RoPE, SwiGLU, residual add,
// embedding lookup. Raw pointers plus sizes (the CUDA twins take the same arguments).
// Dimension legend: T tokens, C hidden, H heads, D head dim, F ffn, V vocab.
// Tested in tests/unit/test_cpu_kernels.cpp against plain-loop references.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace qlora::cpu {

// y (T, C) = x / sqrt(mean(x²) + eps) * weight. y may alias x.
void rmsnorm(const float* x, const float* weight, float* y, int64_t T, int64_t C, float eps);

// Rotates x (T, n_heads, D) in place with HF's rotate_half RoPE: pairs (i, i + D/2).
// positions (T); inv_freq (D/2) already includes any rope scaling.
void rope(float* x, const int64_t* positions, const float* inv_freq, int64_t T, int64_t n_heads, int64_t D);

// out (T, F) = silu(gate) * up. out may alias gate.
void swiglu(const float* gate, const float* up, float* out, int64_t n);

// y (M, N) += bias (N) on every row; bias may be null.
void add_row_bias(float* y, const float* bias, int64_t M, int64_t N);

// x += y over n elements.
void add_inplace(float* x, const float* y, int64_t n);

// out (T, C) = table[ids] for a (V, C) table in f32 or bf16. Throws Error for an id outside [0, V).
void embedding(const Tensor& table, const int32_t* ids, int64_t T, float* out);

}  // namespace qlora::cpu
