// Shared by the GEMM benchmarks (bench_gemm_bf16, bench_onednn_gemm): the best-of timing and the
// one JSON line per (op, shape, isa), so their figures are measured and printed the same way.
#pragma once
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

namespace qlora::bench {

// Best wall time over repeats that together take >= 0.3 s (at least 3), after one warm-up call
// (it packs buffers and faults pages in).
template <typename Fn>
double best_seconds(Fn&& fn) {
  fn();
  double best = 1e30, total = 0;
  for (int r = 0; total < 0.3 || r < 3; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s), total += s;
  }
  return best;
}

// {"op", "N", "O", "K", "isa", "ms", "gflops"} with GFLOP/s = 2·N·O·K / seconds.
inline void report(const char* op, int64_t N, int64_t O, int64_t K, const std::string& isa, double seconds) {
  const double gflops = 2.0 * double(N) * double(O) * double(K) / seconds * 1e-9;
  fmt::print("{}\n", nlohmann::json{{"op", op}, {"N", N}, {"O", O}, {"K", K}, {"isa", isa},
                                    {"ms", seconds * 1e3}, {"gflops", gflops}}
                         .dump());
  std::fflush(stdout);
}

}  // namespace qlora::bench
