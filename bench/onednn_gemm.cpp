// oneDNN's bf16 matmul on the shapes of bench_gemm_bf16 (the option the CPU-speed issue asked to
// measure beside our own micro-kernel; torch.matmul in bf16 runs oneDNN too). AMX is allowed with
// dnnl::set_max_cpu_isa before the first primitive. Per shape two rows: y (N, O) = x (N, K) · Wᵀ
// with W as stored (O, K) row-major ("plain", what a call on our weights gets), and with W
// reordered once into oneDNN's preferred blocked layout ("prepacked", its best case); and dx (N, K)
// = dy (N, O) · W plain. Inputs are bf16 already (our kernels also round x), output f32. One JSON
// line per (op, shape) like bench_gemm_bf16's, isa "onednn:<what it ran>".
// Built only where libdnnl-dev is installed (Debian: apt-get install libdnnl-dev).
//   bench_onednn_gemm [threads=0]
#include <fmt/core.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <vector>

#include "backend/cpu/threads.h"
#include "gemm_timing.h"
#include "core/dtype.h"
#include "core/rng.h"

using namespace qlora;
using qlora::bench::best_seconds;
using qlora::bench::report;

namespace {

std::vector<uint16_t> random_bf16(int64_t n, Rng& rng, float scale) {
  std::vector<float> v(static_cast<size_t>(n), 0.0f);
  for (float& x : v) x = (2.0f * rng.uniform() - 1.0f) * scale;
  std::vector<uint16_t> out(v.size());
  convert_f32_to_bf16(v.data(), out.data(), v.size());
  return out;
}

using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;

// c (M, Nc) = a (M, Kc) · b (Kc, Nc), a row-major, b with layout b_tag ("ab" row-major, "ba" its
// transpose in memory, "any" = reordered into oneDNN's choice once, before timing).
double time_matmul(dnnl::engine& eng, dnnl::stream& st, int64_t M, int64_t Nc, int64_t Kc, uint16_t* a, uint16_t* b,
                   Tag b_stored, bool prepack, float* c, std::string& impl) {
  const memory::desc a_md({M, Kc}, Dt::bf16, Tag::ab), b_md({Kc, Nc}, Dt::bf16, b_stored);
  const memory::desc c_md({M, Nc}, Dt::f32, Tag::ab);
  const memory::desc b_want = prepack ? memory::desc({Kc, Nc}, Dt::bf16, Tag::any) : b_md;
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_want, c_md), eng);
  impl = pd.impl_info_str();
  memory am(a_md, eng, a), bm(b_md, eng, b), cm(c_md, eng, c);
  memory bp = bm;
  if (pd.weights_desc() != b_md) {
    bp = memory(pd.weights_desc(), eng);
    dnnl::reorder(bm, bp).execute(st, bm, bp);
    st.wait();
  }
  const dnnl::matmul prim(pd);
  return best_seconds([&] {
    prim.execute(st, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bp}, {DNNL_ARG_DST, cm}});
    st.wait();
  });
}

}  // namespace

int main(int argc, char** argv) {
  set_num_threads(argc > 1 ? std::atoi(argv[1]) : 0);
  // Before any primitive exists: oneDNN 2.x keeps AMX off unless allowed.
  dnnl::set_max_cpu_isa(dnnl::cpu_isa::avx512_core_amx);
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream st(eng);
  struct Shape {
    int64_t N, O, K;
  };
  const Shape shapes[] = {{256, 576, 576},   {256, 192, 576},  {256, 1536, 576}, {256, 576, 1536},
                          {1024, 2048, 2048}, {256, 4096, 4096}, {256, 11008, 4096}};
  Rng rng(1);
  for (const Shape& s : shapes) {
    std::vector<uint16_t> x = random_bf16(s.N * s.K, rng, 1.0f), w = random_bf16(s.O * s.K, rng, 0.05f);
    std::vector<uint16_t> dy = random_bf16(s.N * s.O, rng, 1.0f);
    std::vector<float> y(size_t(s.N * s.O)), dx(size_t(s.N * s.K));
    std::string impl;
    // W (O, K) row-major is Wᵀ (K, O) in "ba" layout.
    double t = time_matmul(eng, st, s.N, s.O, s.K, x.data(), w.data(), Tag::ba, false, y.data(), impl);
    report("xwt", s.N, s.O, s.K, "onednn:" + impl, t);
    t = time_matmul(eng, st, s.N, s.O, s.K, x.data(), w.data(), Tag::ba, true, y.data(), impl);
    report("xwt_prepacked", s.N, s.O, s.K, "onednn:" + impl, t);
    t = time_matmul(eng, st, s.N, s.K, s.O, dy.data(), w.data(), Tag::ab, false, dx.data(), impl);
    report("dy_w", s.N, s.O, s.K, "onednn:" + impl, t);
  }
}
