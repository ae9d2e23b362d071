// Quantization throughput of quant/nf4.h: quantize_4bit (NF4 and FP4, block 64, with and without
// double quantization) and dequantize_4bit of an (N, K) f32 matrix, in GB/s of f32 input (quantize)
// or f32 output (dequantize). One JSON line per case; bench/quantize_vs_bnb.sh runs it beside
// bitsandbytes' CPU quantize_4bit on the same shape and threads and prints the ratios.
//   bench_quantize [N=4096] [K=4096] [threads=0] [repeats=5]
#include <fmt/core.h>

#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <vector>

#include "backend/cpu/threads.h"
#include "core/error.h"
#include "core/rng.h"
#include "quant/nf4.h"

using namespace qlora;

int main(int argc, char** argv) {
  try {
    const int64_t N = argc > 1 ? std::atoll(argv[1]) : 4096;
    const int64_t K = argc > 2 ? std::atoll(argv[2]) : 4096;
    set_num_threads(argc > 3 ? std::atoi(argv[3]) : 0);
    const int repeats = argc > 4 ? std::atoi(argv[4]) : 5;
    Rng rng(42);
    std::vector<float> x(size_t(N * K));
    for (auto& v : x) v = (rng.uniform() * 2.0f - 1.0f) * 0.05f;
    std::vector<float> out(x.size());
    const double gbytes = double(x.size()) * 4.0 / 1e9;
    using clock = std::chrono::steady_clock;
    for (QuantType type : {QuantType::NF4, QuantType::FP4}) {
      for (bool dq : {false, true}) {
        double best_q = 1e30, best_d = 1e30;
        QuantTensor q;
        for (int r = 0; r < repeats; ++r) {
          auto t0 = clock::now();
          q = quantize_4bit(x.data(), {N, K}, type, 64, dq);
          auto t1 = clock::now();
          dequantize_4bit(q, out.data());
          auto t2 = clock::now();
          best_q = std::min(best_q, std::chrono::duration<double>(t1 - t0).count());
          best_d = std::min(best_d, std::chrono::duration<double>(t2 - t1).count());
        }
        nlohmann::json j = {{"impl", "qlora.cpp"},          {"type", quant_type_name(type)},
                            {"double_quant", dq},          {"shape", {N, K}},
                            {"threads", num_threads()},    {"quantize_gb_per_s", gbytes / best_q},
                            {"dequantize_gb_per_s", gbytes / best_d}};
        fmt::print("{}\n", j.dump());
      }
    }
  } catch (const Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
