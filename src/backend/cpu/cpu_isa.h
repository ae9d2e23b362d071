// Which instruction set the CPU backend's bf16 products run on, chosen at run time: AMX tiles
// (tdpbf16ps), AVX512-BF16 (vdpbf16ps), or f32 GEMMs on bf16-rounded operands (any x86-64).
// The binary carries all three (function target attributes), so one build serves every CPU.
// QLORA_CPU_ISA=amx|avx512bf16|avx512|avx2 caps the choice (never raises it above what the CPU and
// the kernel allow), so tests and benchmarks can force each fallback on an AMX machine. It picks
// the bf16 product path only; the other kernels are compiled for the build's -march.
// Tested in tests/unit/test_gemm_bf16.cpp.
#pragma once

namespace qlora::cpu {

// Ordered: a higher value can run everything a lower one can.
enum class CpuIsa { Avx2, Avx512, Avx512Bf16, Amx };

const char* isa_name(CpuIsa isa);
// What this CPU (and kernel, for AMX's tile state) supports, ignoring QLORA_CPU_ISA.
CpuIsa detected_isa();
// detected_isa() capped by QLORA_CPU_ISA (read on each call). An unknown value throws Error
// naming the variable and the accepted values.
CpuIsa active_isa();
// Parses amx|avx512bf16|avx512|avx2 (Error on anything else).
CpuIsa isa_from_name(const char* name);

}  // namespace qlora::cpu
