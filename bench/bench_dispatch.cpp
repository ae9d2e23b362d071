// The cost of the backend seam's virtual dispatch: the same small operation called directly (what
// a compile-time backend parameter would compile to) and through Backend& (one indirect call):
// a 64-byte device copy (memmove; nothing else in the call, so the difference is the dispatch),
// and add_inplace on 16 and 576 floats (a decode-sized row; these include the kernel's OpenMP
// region, which costs far more than the call). Prints ns per call as JSON; the reasoning that
// turns it into a per-token figure is in docs/architecture.md.
//   bench_dispatch [calls=2000000]
#include <fmt/core.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "backend/cpu/block_ops.h"
#include "backend/cpu/cpu_backend.h"

using namespace qlora;

namespace {

template <typename Fn>
double ns_per_call(int64_t calls, Fn&& fn) {
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < calls; ++i) fn();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s * 1e9 / double(calls));
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t calls = argc > 1 ? std::atoll(argv[1]) : 2000000;
  // An opaque pointer: the compiler cannot devirtualise calls through it.
  std::shared_ptr<Backend> owner = make_cpu_backend();
  Backend* volatile opaque = owner.get();
  Backend& be = *opaque;
  nlohmann::json out = {{"calls", calls}};
  {
    std::vector<char> a(64), b(64, 1);
    const double direct = ns_per_call(calls, [&] { std::memmove(a.data(), b.data(), 64); asm volatile("" ::: "memory"); });
    const double virt = ns_per_call(calls, [&] { be.copy(a.data(), b.data(), 64); asm volatile("" ::: "memory"); });
    out["copy64"] = {{"direct_ns", direct}, {"virtual_ns", virt}, {"overhead_ns", virt - direct}};
  }
  for (int64_t n : {16, 576}) {
    std::vector<float> x(size_t(n), 1.0f), y(size_t(n), 1e-9f);
    const double direct = ns_per_call(calls, [&] { cpu::add_inplace<float>(x.data(), y.data(), n); });
    const double virt = ns_per_call(calls, [&] { be.add_inplace(x.data(), y.data(), n); });
    out["n" + std::to_string(n)] = {{"direct_ns", direct}, {"virtual_ns", virt}, {"overhead_ns", virt - direct}};
  }
  fmt::print("{}\n", out.dump());
  return 0;
}
