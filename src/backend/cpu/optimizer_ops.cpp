// Optimizer kernels and gradient reductions. See optimizer_ops.h; the operation order of each
// update is documented where its scalars are derived (optim/adamw.cpp, optim/adamw_8bit.cpp).
#include "backend/cpu/optimizer_ops.h"
#include "backend/cpu/quantize.h"

#include <algorithm>
#include <cmath>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace qlora::cpu {
namespace {

// Elements below this run single-threaded (an OpenMP fork costs more than the update).
constexpr int64_t kOmpMinElements = 1 << 14;
// Elements per OpenMP work item of the AdamW step.
constexpr int64_t kKernelSpan = 8192;

// The AdamW element loop on n elements. Written with AVX2 intrinsics where available because GCC
// does not vectorise std::sqrt under -fmath-errno (its default). Lanes do the scalar loop's
// operations; the scalar tail (n % 8) may differ by an FMA contraction the compiler chooses, but
// tails only occur at a param's end (pages and spans are multiples of 8 elements).
void adamw_span(float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v, int64_t n,
                const AdamWScalars k) {
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

}  // namespace

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& k) {
  const int64_t spans = (n + kKernelSpan - 1) / kKernelSpan;
#pragma omp parallel for if (n >= kOmpMinElements) schedule(static)
  for (int64_t c = 0; c < spans; ++c) {
    const int64_t e0 = c * kKernelSpan, e1 = std::min(n, e0 + kKernelSpan);
    adamw_span(p + e0, g + e0, m + e0, v + e0, e1 - e0, k);
  }
}

float quantize_block_8bit(const float* x, int64_t n, const float* code, uint8_t* q) {
  float absmax = 0.0f;
  for (int64_t i = 0; i < n; ++i) absmax = std::fmax(absmax, std::fabs(x[i]));
  if (absmax == 0.0f) {
    // bnb divides 0/0 here; any code dequantizes to 0 with absmax 0. Take the code's zero.
    const uint8_t zero = uint8_t(std::lower_bound(code, code + 256, 0.0f) - code);
    for (int64_t i = 0; i < n; ++i) q[i] = zero;
    return absmax;
  }
  for (int64_t i = 0; i < n; ++i) q[i] = kernel_code_8bit(code, x[i] / absmax);
  return absmax;
}

void adamw8bit_step(float* p, const float* g, uint8_t* q1, uint8_t* q2, float* absmax1, float* absmax2, int64_t n,
                    const DynamicMaps& maps, const AdamW8bitScalars& k) {
  const float* code1 = maps.signed_map;
  const float* code2 = maps.unsigned_map;
  const int64_t nb = (n + kOptim8bitBlock - 1) / kOptim8bitBlock;
#pragma omp parallel for if (n >= kOmpMinElements) schedule(static)
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t e0 = b * kOptim8bitBlock, e1 = std::min(n, e0 + kOptim8bitBlock), len = e1 - e0;
    float mb[kOptim8bitBlock], vb[kOptim8bitBlock];
    const float a1 = absmax1[b], a2 = absmax2[b];
    float* pv = p + e0;
    const float* gb = g + e0;
    for (int64_t j = 0; j < len; ++j) {
      const float gj = gb[j];
      const float mj = std::fma(gj, k.one_minus_b1, code1[q1[e0 + j]] * a1 * k.b1);
      float vj = code2[q2[e0 + j]] * a2 * k.b2;
      vj = vj + k.one_minus_b2 * gj * gj;
      const float denom = std::sqrt(vj) / k.c2 + k.eps;
      float x = pv[j];
      if (k.apply_decay) x = x * k.decay;
      pv[j] = x + k.neg_step * mj / denom;
      mb[j] = mj;
      vb[j] = vj;
    }
    absmax1[b] = quantize_block_8bit(mb, len, code1, q1 + e0);
    absmax2[b] = quantize_block_8bit(vb, len, code2, q2 + e0);
  }
}

void adamw32bit_bnb_step(float* p, const float* g, float* m, float* v, int64_t n, const AdamW8bitScalars& k) {
#pragma omp parallel for if (n >= kOmpMinElements) schedule(static)
  for (int64_t j = 0; j < n; ++j) {
    const float gj = g[j];
    const float mj = std::fma(gj, k.one_minus_b1, m[j] * k.b1);
    float vj = v[j] * k.b2;
    vj = vj + k.one_minus_b2 * gj * gj;
    float x = p[j];
    if (k.apply_decay) x = x * k.decay;
    const float upd = mj / (std::sqrt(vj) + k.eps_c2);
    p[j] = std::fma(upd, k.step32, x);  // add_(update, alpha=step_size)
    m[j] = mj;
    v[j] = vj;
  }
}

double sum_squares(const float* x, int64_t n) {
  double s = 0.0;
#pragma omp parallel for reduction(+ : s) if (n >= kOmpMinElements) schedule(static)
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * double(x[i]);
  return s;
}

bool all_finite(const float* x, int64_t n) {
  int bad = 0;
  // x - x is 0 for finite x and NaN for NaN/Inf: one branch-free test that vectorises.
#pragma omp parallel for reduction(| : bad) if (n >= kOmpMinElements) schedule(static)
  for (int64_t i = 0; i < n; ++i) bad |= !(x[i] - x[i] == 0.0f);
  return !bad;
}

void scale(float* x, int64_t n, float factor) {
#pragma omp parallel for if (n >= kOmpMinElements) schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] *= factor;
}

}  // namespace qlora::cpu
