// CPU feature detection for the bf16 products: CPUID for the instructions, XGETBV for the OS's
// support of the zmm state, and arch_prctl(ARCH_REQ_XCOMP_PERM) for AMX, whose 8 KiB tile state
// Linux hands out only to a process that asks (without it the first tile instruction faults).
#include "backend/cpu/cpu_isa.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace qlora::cpu {

namespace {

constexpr int kArchReqXcompPerm = 0x1023;  // arch_prctl request (asm/prctl.h)
constexpr int kXfeatureXtileData = 18;     // the AMX tile data state component

bool cpuid(unsigned leaf, unsigned sub, unsigned& a, unsigned& b, unsigned& c, unsigned& d) {
  return __get_cpuid_count(leaf, sub, &a, &b, &c, &d) != 0;
}

// The OS saves and restores the opmask and zmm registers (XCR0 bits 1, 2, 5, 6, 7).
bool os_saves_zmm() {
  unsigned a, b, c, d;
  if (!cpuid(1, 0, a, b, c, d) || !(c & (1u << 27))) return false;  // OSXSAVE
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & 0xe6u) == 0xe6u;
}

bool request_amx_state() { return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtileData) == 0; }

CpuIsa detect() {
  unsigned a, b, c, d;
  if (!cpuid(7, 0, a, b, c, d)) return CpuIsa::Avx2;
  const bool avx512 = (b & (1u << 16)) && (b & (1u << 30)) && (b & (1u << 31)) && os_saves_zmm();  // F, BW, VL
  if (!avx512) return CpuIsa::Avx2;
  const bool amx = (d & (1u << 24)) && (d & (1u << 22));  // AMX-TILE, AMX-BF16
  unsigned a1, b1, c1, d1;
  const bool avx512bf16 = cpuid(7, 1, a1, b1, c1, d1) && (a1 & (1u << 5));
  if (amx && avx512bf16 && request_amx_state()) return CpuIsa::Amx;
  return avx512bf16 ? CpuIsa::Avx512Bf16 : CpuIsa::Avx512;
}

}  // namespace

const char* isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Amx: return "amx";
    case CpuIsa::Avx512Bf16: return "avx512bf16";
    case CpuIsa::Avx512: return "avx512";
    case CpuIsa::Avx2: return "avx2";
  }
  return "?";
}

CpuIsa isa_from_name(const char* name) {
  for (CpuIsa isa : {CpuIsa::Amx, CpuIsa::Avx512Bf16, CpuIsa::Avx512, CpuIsa::Avx2})
    if (std::strcmp(name, isa_name(isa)) == 0) return isa;
  fail("cpu", "QLORA_CPU_ISA='{}' is not one of amx, avx512bf16, avx512, avx2", name);
}

CpuIsa detected_isa() {
  static const CpuIsa isa = detect();
  return isa;
}

CpuIsa active_isa() {
  // Read on every call (a getenv beside a GEMM), so a test can switch paths within one process.
  const char* forced = std::getenv("QLORA_CPU_ISA");
  if (!forced || !*forced) return detected_isa();
  const CpuIsa cap = isa_from_name(forced);
  return cap < detected_isa() ? cap : detected_isa();
}

}  // namespace qlora::cpu
