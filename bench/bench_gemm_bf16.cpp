// Throughput of the bf16 products (backend/cpu/gemm_bf16.h) on every ISA this CPU has — AMX,
// AVX512-BF16 and the f32 fallback (bf16-rounded operands through OpenBLAS sgemm) — and of the
// 4-bit forward in bf16 (NF4 dequantized into the packed operand) beside the f32 qmatmul, on the
// model's shapes: SmolLM2-135M's projections at 256 tokens, the 1024×2048×2048 square of the
// issue, and a 7B layer's 4096/11008. One JSON line per (op, shape, isa): GFLOP/s = 2·N·O·K / best
// time. torch's figure for the same shapes comes from bench/gemm_vs_torch.sh's torch side.
//   bench_gemm_bf16 [threads=0]
#include <fmt/core.h>

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <vector>

#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/qmatmul.h"
#include "backend/cpu/threads.h"
#include "gemm_timing.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "quant/nf4.h"

using namespace qlora;
using qlora::bench::best_seconds;
using qlora::bench::report;
using cpu::CpuIsa;

namespace {

std::vector<float> random_vector(int64_t n, Rng& rng, float scale) {
  std::vector<float> v(static_cast<size_t>(n), 0.0f);
  for (float& x : v) x = (2.0f * rng.uniform() - 1.0f) * scale;
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  set_num_threads(argc > 1 ? std::atoi(argv[1]) : 0);
  struct Shape {
    int64_t N, O, K;
  };
  const Shape shapes[] = {{256, 576, 576},   {256, 192, 576},  {256, 1536, 576}, {256, 576, 1536},
                          {1024, 2048, 2048}, {256, 4096, 4096}, {256, 11008, 4096}};
  std::vector<CpuIsa> isas;
  for (CpuIsa isa : {CpuIsa::Amx, CpuIsa::Avx512Bf16, CpuIsa::Avx2})
    if (isa <= cpu::detected_isa()) isas.push_back(isa);
  Rng rng(1);
  for (const Shape& s : shapes) {
    const std::vector<float> x = random_vector(s.N * s.K, rng, 1.0f), w = random_vector(s.O * s.K, rng, 0.05f);
    const std::vector<float> dy = random_vector(s.N * s.O, rng, 1.0f);
    std::vector<uint16_t> w16(w.size());
    convert_f32_to_bf16(w.data(), w16.data(), w.size());
    const cpu::Bf16Matrix wm{s.O, s.K, w16.data(), s.K, {}};
    std::vector<float> y(size_t(s.N * s.O)), dx(size_t(s.N * s.K));
    for (CpuIsa isa : isas) {
      report("xwt", s.N, s.O, s.K, cpu::isa_name(isa),
             best_seconds([&] { cpu::bf16_xwt(x.data(), wm, y.data(), s.N, isa); }));
      report("dy_w", s.N, s.O, s.K, cpu::isa_name(isa),
             best_seconds([&] { cpu::bf16_dy_w_acc(dy.data(), wm, dx.data(), s.N, isa); }));
    }
    // QLoRA: NF4 (block 64, double quantization) forward, bf16 on the best ISA vs the f32 kernel.
    const QuantTensor q = quantize_4bit(w.data(), {s.O, s.K}, QuantType::NF4, 64, true);
    report("q4_xwt_bf16", s.N, s.O, s.K, cpu::isa_name(cpu::active_isa()),
           best_seconds([&] { cpu::qmatmul_forward_bf16(x.data(), q, y.data(), s.N); }));
    report("q4_xwt_f32", s.N, s.O, s.K, "f32",
           best_seconds([&] { cpu::qmatmul_forward(x.data(), q, y.data(), s.N); }));
    report("q4_dy_w_bf16", s.N, s.O, s.K, cpu::isa_name(cpu::active_isa()),
           best_seconds([&] { cpu::qmatmul_dy_w_acc_bf16(dy.data(), q, dx.data(), s.N); }));
    report("q4_dy_w_f32", s.N, s.O, s.K, "f32",
           best_seconds([&] { cpu::qmatmul_dy_w_acc(dy.data(), q, dx.data(), s.N); }));
  }
}
