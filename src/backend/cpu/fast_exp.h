// A vectorisable f32 exp for the softmaxes of attention and cross-entropy (glibc's expf is not
// vectorised without -ffast-math, and these loops run T² · H and N · V times). Cephes' expf
// scheme: x = n·ln2 + r with |r| <= ln2/2, e^r by a degree-7 polynomial, 2^n through the exponent
// bits; about 1 ulp. exp(-inf) and anything below the smallest normal give 0; exp(NaN) is NaN.
// Tested in tests/unit/test_fast_exp.cpp (against std::exp, NaN and infinities) and through
// tests/unit/test_train_ops.cpp (softmaxes vs double references).
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace qlora::cpu {

inline float fast_expf(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;  // ln2 split so n·kLn2Hi is exact
  constexpr float kMin = -87.33654f, kMax = 88.0f;
  const float xc = std::min(std::max(x, kMin), kMax);
  const float n = std::floor(xc * kLog2e + 0.5f);  // in [-126, 127]; NaN when x is NaN
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  // Converting NaN to int is undefined behaviour. std::max(lo, v) is (lo < v) ? v : lo, which is lo
  // when v is NaN (every comparison with NaN is false), and v otherwise since n >= -126: one maxps,
  // and the cast below never sees NaN. The NaN still reaches the result through r (p is NaN).
  const float n_safe = std::max(-127.0f, n);
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float scale = std::bit_cast<float>((int32_t(n_safe) + 127) << 23);
  return x < kMin ? 0.0f : p * scale;
}

// exp in T's precision: the fast f32 version for float, std::exp for double (gradient checks).
inline float exp_t(float x) { return fast_expf(x); }
inline double exp_t(double x) { return std::exp(x); }

}  // namespace qlora::cpu
