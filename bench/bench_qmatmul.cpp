// Throughput of the fused 4-bit matmuls (backend/cpu/qmatmul.h) beside plain f32 OpenBLAS sgemm on the
// same shapes: forward y = x · Wᵀ and backward dx = dy · W, NF4 block 64 with double quantization
// (the QLoRA storage). One JSON line per (M, N, K) with GFLOP/s (2·M·N·K / best time) of both and
// the ratio qmatmul / sgemm. The 4-bit weight reads 8x fewer bytes, so decode (M = 1) may beat f32;
// at large M both are compute-bound and the dequantization is overhead.
//   bench_qmatmul [threads=0] [repeats=auto]
#include <cblas.h>
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "backend/cpu/threads.h"
#include "core/error.h"
#include "core/rng.h"
#include "quant/nf4.h"
#include "backend/cpu/qmatmul.h"

using qlora::cpu::qmatmul_backward_input;
using qlora::cpu::qmatmul_forward;

using namespace qlora;

namespace {

std::vector<float> random_vector(size_t n, Rng& rng, float scale) {
  std::vector<float> v(n);
  for (auto& x : v) x = (rng.uniform() * 2.0f - 1.0f) * scale;
  return v;
}

// Best wall times of a and b, run alternately (so both see the same load from other processes on a
// shared machine) for enough repeats to take ~2 s (at least 3), after one warm-up of each.
template <typename A, typename B>
std::pair<double, double> best_seconds(A&& a, B&& b, int repeats) {
  using clock = std::chrono::steady_clock;
  const auto time = [](auto& fn) {
    const auto t0 = clock::now();
    fn();
    return std::chrono::duration<double>(clock::now() - t0).count();
  };
  a();
  b();
  double best_a = 1e30, best_b = 1e30, total = 0;
  for (int r = 0; (repeats > 0 ? r < repeats : (r < 3 || total < 2.0)) && r < 100000; ++r) {
    const double ta = time(a), tb = time(b);
    best_a = std::min(best_a, ta);
    best_b = std::min(best_b, tb);
    total += ta + tb;
  }
  return {best_a, best_b};
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int threads = argc > 1 ? std::atoi(argv[1]) : 0;
    const int repeats = argc > 2 ? std::atoi(argv[2]) : 0;
    set_num_threads(threads);
    struct NK {
      int64_t N, K;
    };
    for (NK nk : {NK{1536, 576}, NK{4096, 4096}}) {
      const int64_t N = nk.N, K = nk.K;
      Rng rng(uint64_t(N * 1000003 + K));
      const std::vector<float> w = random_vector(size_t(N * K), rng, 0.05f);  // (N, K)
      const QuantTensor wq = quantize_4bit(w.data(), {N, K}, QuantType::NF4, 64, /*double_quant=*/true);
      for (int64_t M : {1, 16, 512}) {
        const std::vector<float> x = random_vector(size_t(M * K), rng, 1.0f);   // (M, K)
        const std::vector<float> dy = random_vector(size_t(M * N), rng, 1.0f);  // (M, N)
        std::vector<float> y(size_t(M * N)), dx(size_t(M * K));
        const double flops = 2.0 * double(M) * double(N) * double(K);

        const auto [t_qf, t_sf] = best_seconds(
            [&] { qmatmul_forward(x.data(), wq, y.data(), M); },
            [&] {
              cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.0f, x.data(), int(K),
                          w.data(), int(K), 0.0f, y.data(), int(N));
            },
            repeats);
        const auto [t_qb, t_sb] = best_seconds(
            [&] { qmatmul_backward_input(dy.data(), wq, dx.data(), M); },
            [&] {
              cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(M), int(K), int(N), 1.0f, dy.data(), int(N),
                          w.data(), int(K), 0.0f, dx.data(), int(K));
            },
            repeats);
        nlohmann::json j = {{"M", M},
                            {"N", N},
                            {"K", K},
                            {"threads", num_threads()},
                            {"weight", "nf4-b64-dq"},
                            {"fwd_qmatmul_gflops", flops / t_qf * 1e-9},
                            {"fwd_sgemm_gflops", flops / t_sf * 1e-9},
                            {"fwd_ratio", t_sf / t_qf},
                            {"bwd_qmatmul_gflops", flops / t_qb * 1e-9},
                            {"bwd_sgemm_gflops", flops / t_sb * 1e-9},
                            {"bwd_ratio", t_sb / t_qb}};
        fmt::print("{}\n", j.dump());
        std::fflush(stdout);
      }
    }
  } catch (const Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
