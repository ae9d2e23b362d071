// bf16 × bf16 → f32 matrix products for bf16 compute (what torch autocast runs): the activation
// operand is rounded to bf16 (nearest even), products are exact, sums accumulate in f32. Two
// inner kernels on the same packed operands: AMX tiles (tdpbf16ps, 32×32 output blocks from four
// 16×16 tiles) and AVX512-BF16 (vdpbf16ps), and, for CPUs with neither, the f32 fallback: the
// same bf16-rounded operands widened into sgemm, so every ISA computes the same exact products
// and differs only in summation order. Callers pass the ISA (cpu_isa.h's active_isa()). A weight is read through Bf16Matrix, so a 4-bit weight is dequantized
// slice by slice straight into the packed operand and no bf16 copy of it ever exists.
// Legend: N rows (tokens), K input features, O output features.
// Tested in tests/unit/test_gemm_bf16.cpp against the f32 kernels on bf16-rounded operands.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "backend/cpu/cpu_isa.h"

namespace qlora::cpu {

// Writes rows [r0, r0 + rows) × columns [c0, c0 + cols) of a matrix as bf16 into dst (row stride ld).
using Bf16Slice = std::function<void(int64_t r0, int64_t rows, int64_t c0, int64_t cols, uint16_t* dst, int64_t ld)>;

// A (rows, cols) matrix read as bf16: a plain row-major bf16 array (data, ld) or a slice producer.
struct Bf16Matrix {
  int64_t rows = 0, cols = 0;
  const uint16_t* data = nullptr;  // when not null: element (r, c) at data[r * ld + c]
  int64_t ld = 0;
  Bf16Slice slice;                 // used when data is null
  void read(int64_t r0, int64_t nrows, int64_t c0, int64_t ncols, uint16_t* dst, int64_t dst_ld) const;
};

// y (N, O) = x (N, K) · Wᵀ (overwritten), W (O, K).
void bf16_xwt(const float* x, const Bf16Matrix& w, float* y, int64_t N, CpuIsa isa);
// dx (N, K) += dy (N, O) · W, W (O, K).
void bf16_dy_w_acc(const float* dy, const Bf16Matrix& w, float* dx, int64_t N, CpuIsa isa);
// dw (O, K) += dyᵀ (O, N) · x (N, K), both rounded to bf16.
void bf16_dyt_x_acc(const float* dy, const float* x, float* dw, int64_t N, int64_t O, int64_t K, CpuIsa isa);

// A copy of src (n) rounded to bf16 (kept in f32): the activation operand of the f32 paths.
std::vector<float> bf16_rounded_copy(const float* src, int64_t n);

// Whether isa has a native bf16 kernel here (Amx or Avx512Bf16).
inline bool has_bf16_kernel(CpuIsa isa) { return isa >= CpuIsa::Avx512Bf16; }

// Who runs the native bf16 products at isa: our micro-kernels (the default: their results do not
// depend on the thread count; docs/architecture.md) or oneDNN's matmul (onednn_gemm.h), chosen by
// QLORA_CPU_GEMM=own|onednn (read each call; Error when unknown, or onednn without oneDNN built
// in). Below Avx512Bf16 the f32 fallback runs either way.
enum class GemmEngine { Own, OneDnn };
GemmEngine gemm_engine(CpuIsa isa);

}  // namespace qlora::cpu
