// Forward and backward kernels of the Llama block (training and inference alike), on raw pointers
// plus sizes, for T = float and T = double (finite-difference gradient checks). The CpuBackend
// (cpu_backend.h) exposes them through the Backend interface; CUDA twins take the same arguments.
// Conventions: gradients of an op's *inputs* are written (overwritten) unless the comment says
// "+=", parameter gradients are always accumulated (+=), so micro-batches add up.
// Dimension legend: N rows (B*T tokens), C hidden, H heads, D head dim, F ffn, V vocab.
// Tested in tests/grad/test_op_grads.cpp (central differences in double precision) and
// tests/unit/test_train_ops.cpp (float vs double, and vs plain-loop references).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace qlora::cpu {

// y (N, C) = x * rstd * weight with rstd (N) = 1 / sqrt(mean(x²) + eps), saved for the backward.
template <typename T>
void rmsnorm_forward(const T* x, const T* weight, T* y, T* rstd, int64_t N, int64_t C, double eps);
// dx (N, C) += ..., dweight (C) += ... (dweight may be null: frozen norm).
template <typename T>
void rmsnorm_backward(const T* dy, const T* x, const T* weight, const T* rstd, T* dx, T* dweight, int64_t N,
                      int64_t C);

// HF rotate_half RoPE in place on x (N, n_heads, D): pairs (i, i + D/2) rotated by positions[n] *
// inv_freq[i]. The angles are computed in f32 as transformers does, whatever T is.
template <typename T>
void rope_forward(T* x, const int64_t* positions, const float* inv_freq, int64_t N, int64_t n_heads, int64_t D);
// The transpose (rotation by -angle), in place on dx (N, n_heads, D).
template <typename T>
void rope_backward(T* dx, const int64_t* positions, const float* inv_freq, int64_t N, int64_t n_heads, int64_t D);

// out (n) = silu(gate) * up. out may alias neither input.
template <typename T>
void swiglu_forward(const T* gate, const T* up, T* out, int64_t n);
// dgate (n), dup (n) written from dout (n).
template <typename T>
void swiglu_backward(const T* dout, const T* gate, const T* up, T* dgate, T* dup, int64_t n);

// out (N, C) = table[ids]; table (V, C) is f32, bf16 or f64 (f64 only with T = double).
template <typename T>
void embedding_forward(const Tensor& table, const int32_t* ids, int64_t N, T* out);
// dtable (V, C) += scatter of dout (N, C) by ids.
template <typename T>
void embedding_backward(const T* dout, const int32_t* ids, int64_t N, int64_t C, T* dtable);

// x (n) += y (n).
template <typename T>
void add_inplace(T* x, const T* y, int64_t n);

}  // namespace qlora::cpu
