// AdamW with f32 state, operation for operation as torch.optim.AdamW (foreach=False,
// _single_tensor_adam with decoupled_weight_decay) computes it on CPU in f32:
//   p *= 1 - lr*wd                        (params with weight_decay only)
//   m.lerp_(g, 1 - beta1)                 ATen's vectorised lerp: fma(w, g - m, m) for w < 0.5
//   v = v*beta2; v += (1 - beta2)*g*g     mul_ then addcmul_ ((value*g)*g)
//   denom = sqrt(v) / sqrt(1 - beta2^t) + eps
//   p += (-lr / (1 - beta1^t)) * m / denom   addcdiv_
// with every Python-float scalar computed in double and rounded to f32 once, as ATen does.
// One known difference: torch's CPU sqrt is MKL's vsSqrt, not IEEE-rounded (1 ulp off on ~1 in 6
// elements); ours is IEEE, so p agrees with torch to ~1 ulp (2.3e-7 relative in the parity test).
// State: "<param>.exp_avg" and "<param>.exp_avg_sq" (torch's names), walked page by page.
// Tested against torch in tests/parity/test_optim_parity.cpp and in tests/unit/test_optim.cpp.
#include <cmath>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "optim/adamw_base.h"

namespace qlora {
namespace {

struct AdamWScalars {
  float decay_mul, w1, b2, c2, bc2_sqrt, neg_step, eps;
};

// The element loop, on n elements. Written with AVX2 intrinsics where available because GCC does
// not vectorise std::sqrt under -fmath-errno (its default). Lanes do the scalar loop's operations;
// the scalar tail (n % 8) may differ by an FMA contraction the compiler chooses, but tails only
// occur at a param's end (pages and spans are multiples of 8 elements), the same for every store.
void adamw_kernel(float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v,
                  int64_t n, const AdamWScalars k) {
  int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 decay = _mm256_set1_ps(k.decay_mul), w1 = _mm256_set1_ps(k.w1), b2 = _mm256_set1_ps(k.b2);
  const __m256 c2 = _mm256_set1_ps(k.c2), bc2 = _mm256_set1_ps(k.bc2_sqrt), step = _mm256_set1_ps(k.neg_step);
  const __m256 eps = _mm256_set1_ps(k.eps);
  for (; j + 8 <= n; j += 8) {
    const __m256 x = _mm256_mul_ps(_mm256_loadu_ps(p + j), decay);
    const __m256 gj = _mm256_loadu_ps(g + j), m0 = _mm256_loadu_ps(m + j);
    const __m256 mj = _mm256_fmadd_ps(w1, _mm256_sub_ps(gj, m0), m0);
    __m256 vj = _mm256_mul_ps(_mm256_loadu_ps(v + j), b2);
    vj = _mm256_add_ps(vj, _mm256_mul_ps(_mm256_mul_ps(c2, gj), gj));
    const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vj), bc2), eps);
    _mm256_storeu_ps(p + j, _mm256_add_ps(x, _mm256_div_ps(_mm256_mul_ps(step, mj), denom)));
    _mm256_storeu_ps(m + j, mj);
    _mm256_storeu_ps(v + j, vj);
  }
#endif
  for (; j < n; ++j) {
    const float x = p[j] * k.decay_mul;  // x * 1.0f is exact: params without decay pass 1
    const float gj = g[j];
    const float mj = std::fma(k.w1, gj - m[j], m[j]);
    float vj = v[j] * k.b2;
    vj = vj + k.c2 * gj * gj;
    const float denom = std::sqrt(vj) / k.bc2_sqrt + k.eps;
    p[j] = x + k.neg_step * mj / denom;
    m[j] = mj;
    v[j] = vj;
  }
}

// Elements per OpenMP work item.
constexpr int64_t kKernelSpan = 8192;


class AdamW final : public AdamWBase {
 public:
  using AdamWBase::AdamWBase;

 protected:
  void create_state(const std::vector<Param>& params) override {
    for (const Param& p : params) {
      State s;
      s.m = add_buffer(p.name + ".exp_avg", DType::F32, p.value.shape());
      s.v = add_buffer(p.name + ".exp_avg_sq", DType::F32, p.value.shape());
      state_.push_back(s);
    }
  }

  std::vector<std::string> key_suffixes() const override { return {".exp_avg", ".exp_avg_sq"}; }

  void update(const std::vector<Param>& params, double lr, int64_t t) override {
    const double bc1 = 1.0 - std::pow(config_.beta1, double(t));
    const double bc2 = 1.0 - std::pow(config_.beta2, double(t));
    const float w1 = float(1.0 - config_.beta1);
    const float b2 = float(config_.beta2), c2 = float(1.0 - config_.beta2);
    const float bc2_sqrt = float(std::pow(bc2, 0.5));  // Python's bias_correction2 ** 0.5
    const float neg_step = float(-(lr / bc1));
    const float eps = float(config_.eps);
    const size_t page = store_->page_bytes();

    for (size_t i = 0; i < params.size(); ++i) {
      const Param& p = params[i];
      const bool decay = p.weight_decay && config_.weight_decay != 0.0;
      const float decay_mul = decay ? float(1.0 - lr * config_.weight_decay) : 1.0f;
      float* value = p.value.data<float>();
      const float* grad = p.grad.data<float>();
      const int64_t n = p.value.numel();
      const int64_t chunk = page == SIZE_MAX ? n : int64_t(page / sizeof(float));
      for_each_chunk(n, chunk, [&](int64_t lo, int64_t hi) {
        const int64_t len = hi - lo;
        const size_t off = size_t(lo) * sizeof(float), bytes = size_t(len) * sizeof(float);
        float* m = reinterpret_cast<float*>(store_->map(state_[i].m, off, bytes));
        float* v = reinterpret_cast<float*>(store_->map(state_[i].v, off, bytes));
        float* pv = value + lo;
        const float* g = grad + lo;
        const AdamWScalars k{decay_mul, w1, b2, c2, bc2_sqrt, neg_step, eps};
        const int64_t spans = (len + kKernelSpan - 1) / kKernelSpan;
#pragma omp parallel for if (len >= kOptimOmpMinElements) schedule(static)
        for (int64_t c = 0; c < spans; ++c) {
          const int64_t e0 = c * kKernelSpan, e1 = std::min(len, e0 + kKernelSpan);
          adamw_kernel(pv + e0, g + e0, m + e0, v + e0, e1 - e0, k);
        }
        store_->unmap(state_[i].m, off, bytes);
        store_->unmap(state_[i].v, off, bytes);
      });
    }
  }

 private:
  struct State {
    size_t m = 0, v = 0;  // store handles
  };
  std::vector<State> state_;
};

}  // namespace

std::unique_ptr<Optimizer> make_adamw_f32(const AdamWConfig& config, std::unique_ptr<StateStore> store) {
  return std::make_unique<AdamW>(config, std::move(store));
}

}  // namespace qlora
