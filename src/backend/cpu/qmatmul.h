// Matrix products with a frozen 4-bit weight (NF4/FP4 QuantTensor, shape (O, K)) that never
// materialise the full weight: tiles of rows are dequantized into a small f32 buffer that feeds
// OpenBLAS sgemm (large N), or the codes are dotted directly with AVX-512 (small N, decode).
// Accumulation is f32. The f64 twins (finite-difference checks) dequantize row tiles to f64, each
// value the f32 product code · absmax the f32 path sees, widened, and feed dgemm.
// Tested in tests/quant/test_qmatmul.cpp against a double-precision plain-loop reference over the
// fully dequantized weight; bench/bench_qmatmul.cpp compares throughput with f32 sgemm.
//
// Legend: N rows of activations (B*T), O output features, K input features.
#pragma once
#include <cstdint>

#include "core/quant_tensor.h"

namespace qlora::cpu {

// y (N, O) = x (N, K) · dequant(w)ᵀ, w (O, K). y is overwritten.
void qmatmul_forward(const float* x, const QuantTensor& w, float* y, int64_t N);
void qmatmul_forward(const double* x, const QuantTensor& w, double* y, int64_t N);

// dx (N, K) = dy (N, O) · dequant(w): the input gradient through a frozen weight, overwritten.
void qmatmul_backward_input(const float* dy, const QuantTensor& w, float* dx, int64_t N);
// dx (N, K) += dy · dequant(w).
void qmatmul_dy_w_acc(const float* dy, const QuantTensor& w, float* dx, int64_t N);
void qmatmul_dy_w_acc(const double* dy, const QuantTensor& w, double* dx, int64_t N);

// bf16 compute, as bitsandbytes with bnb_4bit_compute_dtype=bfloat16: each weight value
// code · absmax (f32) rounded to bf16, dequantized slice by slice into the bf16 GEMM's packed
// operand (no bf16 copy of w exists), the activation rounded to bf16, f32 accumulation.
// y (N, O) = x · dequant(w)ᵀ (overwritten); dx (N, K) += dy · dequant(w).
void qmatmul_forward_bf16(const float* x, const QuantTensor& w, float* y, int64_t N);
void qmatmul_dy_w_acc_bf16(const float* dy, const QuantTensor& w, float* dx, int64_t N);

// out (numel) = dequant(w), f32.
void dequantize_4bit(const QuantTensor& w, float* out);

}  // namespace qlora::cpu
