// onednn_matmul over oneDNN's C++ API, or, where oneDNN is not built in, a stub that says so.
// See onednn_gemm.h.
#include "backend/cpu/onednn_gemm.h"

#include "core/error.h"

#if QLORA_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <array>
#include <map>
#include <mutex>
#endif

namespace qlora::cpu {

#if QLORA_HAVE_ONEDNN

namespace {

using dnnl::memory;

struct Context {
  dnnl::engine engine;
  dnnl::stream stream;
  Context() {
    // Before the first primitive: oneDNN 2.x leaves AMX off unless allowed.
    dnnl::set_max_cpu_isa(dnnl::cpu_isa::avx512_core_amx);
    engine = dnnl::engine(dnnl::engine::kind::cpu, 0);
    stream = dnnl::stream(engine);
  }
};

Context& context() {
  static Context c;
  return c;
}

// One shape and layout: its memory descriptors and primitive.
struct Matmul {
  memory::desc a, b, c;
  dnnl::matmul primitive;
};

// (M, Nc, Kc, a_rs, a_cs, b_rs, b_cs, ldc, accumulate)
using Key = std::array<int64_t, 9>;

const Matmul& matmul_for(const Key& k) {
  static std::mutex mutex;
  static std::map<Key, Matmul> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(k);
  if (it != cache.end()) return it->second;
  const auto [M, Nc, Kc, a_rs, a_cs, b_rs, b_cs, ldc, accumulate] = k;
  Matmul m;
  m.a = memory::desc({M, Kc}, memory::data_type::bf16, {a_rs, a_cs});
  m.b = memory::desc({Kc, Nc}, memory::data_type::bf16, {b_rs, b_cs});
  m.c = memory::desc({M, Nc}, memory::data_type::f32, {ldc, 1});
  dnnl::primitive_attr attr;
  if (accumulate) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(m.a, m.b, m.c), attr, context().engine);
  m.primitive = dnnl::matmul(pd);
  return cache.emplace(k, std::move(m)).first->second;
}

}  // namespace

bool onednn_built() { return true; }

void onednn_matmul(int64_t M, int64_t Nc, int64_t Kc, const uint16_t* a, int64_t a_rs, int64_t a_cs, const uint16_t* b,
                   int64_t b_rs, int64_t b_cs, float* c, int64_t ldc, bool accumulate) {
  if (M <= 0 || Nc <= 0) return;
  if (Kc <= 0) {  // an empty contraction: c = 0 (or unchanged)
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(c + i * ldc, c + i * ldc + Nc, 0.0f);
    return;
  }
  Context& ctx = context();
  try {
    const Matmul& m = matmul_for({M, Nc, Kc, a_rs, a_cs, b_rs, b_cs, ldc, accumulate ? 1 : 0});
    memory am(m.a, ctx.engine, const_cast<uint16_t*>(a)), bm(m.b, ctx.engine, const_cast<uint16_t*>(b));
    memory cm(m.c, ctx.engine, c);
    m.primitive.execute(ctx.stream, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
    ctx.stream.wait();
  } catch (const dnnl::error& e) {
    fail("onednn", "matmul ({}, {}) x ({}, {}) failed: {}", M, Kc, Kc, Nc, e.what());
  }
}

#else

bool onednn_built() { return false; }

void onednn_matmul(int64_t, int64_t, int64_t, const uint16_t*, int64_t, int64_t, const uint16_t*, int64_t, int64_t,
                   float*, int64_t, bool) {
  fail("onednn", "this build has no oneDNN (install libdnnl-dev and reconfigure)");
}

#endif

}  // namespace qlora::cpu
