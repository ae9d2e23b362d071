// Matrix products with a frozen 4-bit weight (NF4/FP4 QuantTensor, shape (N, K)) that never
// materialise the full f32 weight: tiles of rows are dequantized into a small f32 buffer that feeds
// OpenBLAS sgemm (large M), or the codes are dotted directly with AVX-512 (small M, decode).
// Accumulation is f32. Tested in tests/quant/test_qmatmul.cpp against a double-precision
// plain-loop reference over the fully dequantized weight; bench/bench_qmatmul.cpp compares
// throughput with f32 sgemm on the same shapes.
//
// Legend: M rows of activations (B*T), N output features, K input features.
#pragma once
#include <cstdint>
#include <vector>

#include "quant/quant_tensor.h"

namespace qlora {

// y (M, N) = x (M, K) · dequant(w)ᵀ, w (N, K). y is overwritten.
void qmatmul_forward(const float* x, const QuantTensor& w, float* y, int64_t M);

// dx (M, K) = dy (M, N) · dequant(w), w (N, K): the input gradient through a frozen weight.
// dx is overwritten.
void qmatmul_backward_input(const float* dy, const QuantTensor& w, float* dx, int64_t M);

}  // namespace qlora
