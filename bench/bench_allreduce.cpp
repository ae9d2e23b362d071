// All-reduce bandwidth of the data-parallel Communicator (src/dist) over MPI: for buffers of
// 256 KiB .. 64 MiB of f32 gradients, the mean time of one in-place sum over the ranks, as
// algorithm bandwidth (bytes / s) and bus bandwidth (× 2(N-1)/N, the ring's traffic per rank).
// Rank 0 prints one JSON line per size.
//   mpirun -np 2 build/bench/bench_allreduce [--iters 20] [--max-mib 64]
#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "dist/mpi_communicator.h"

using namespace qlora;

int main(int argc, char** argv) {
  CLI::App app("all-reduce bandwidth over MPI");
  int iters = 20, max_mib = 64;
  app.add_option("--iters", iters);
  app.add_option("--max-mib", max_mib);
  CLI11_PARSE(app, argc, argv);
  try {
    const std::shared_ptr<Communicator> comm = make_mpi_communicator();
    const double n = comm->size();
    for (size_t bytes = size_t(256) << 10; bytes <= (size_t(max_mib) << 20); bytes *= 4) {
      std::vector<float> buf(bytes / sizeof(float), 1.0f);
      comm->all_reduce_sum(buf.data(), buf.size());  // warm-up (connections, pages)
      comm->barrier();
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < iters; ++i) comm->all_reduce_sum(buf.data(), buf.size());
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
      if (comm->rank() == 0)
        fmt::print("{}\n", nlohmann::json{{"ranks", comm->size()},
                                          {"bytes", bytes},
                                          {"seconds", s},
                                          {"algbw_gb_s", double(bytes) / s / 1e9},
                                          {"busbw_gb_s", double(bytes) / s / 1e9 * 2 * (n - 1) / n}}
                               .dump());
    }
  } catch (const Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
