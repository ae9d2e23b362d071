// bf16 × bf16 → f32 matrix products through oneDNN's matmul (its brgemm kernels): the second of the
// two options the CPU-speed issue asked to measure (docs/architecture.md, "Native bf16 products"),
// run by gemm_bf16.cpp when QLORA_CPU_GEMM=onednn, where oneDNN is built in (CMake finds Debian's
// libdnnl-dev; QLORA_HAVE_ONEDNN). Same contract as the other kernels: exact products, f32 sums in
// some order. Primitives are made once per shape and layout and kept.
// Tested in tests/unit/test_gemm_bf16.cpp (QLORA_CPU_GEMM chooses the engine).
#pragma once
#include <cstdint>

namespace qlora::cpu {

// Whether oneDNN is built in.
bool onednn_built();

// c (M, Nc) = a (M, Kc) · b (Kc, Nc), or += with accumulate. a and b are bf16 with element (i, j)
// at a[i * a_rs + j * a_cs] (so a transpose is a stride swap); c is f32, row stride ldc.
void onednn_matmul(int64_t M, int64_t Nc, int64_t Kc, const uint16_t* a, int64_t a_rs, int64_t a_cs, const uint16_t* b,
                   int64_t b_rs, int64_t b_cs, float* c, int64_t ldc, bool accumulate);

}  // namespace qlora::cpu
