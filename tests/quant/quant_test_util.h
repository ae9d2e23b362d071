// Seeded N(0, sigma) data for the quant tests (Box-Muller over core/rng.h, same on every platform).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace qlora::test {

inline std::vector<float> normal_data(int64_t n, uint64_t seed, float sigma = 1.0f) {
  std::printf("[ seed ] normal_data n=%lld seed=%llu sigma=%g\n", (long long)n, (unsigned long long)seed, sigma);
  Rng rng(seed);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i += 2) {
    float u1 = std::max(rng.uniform(), 1e-7f), u2 = rng.uniform();
    float r = std::sqrt(-2.0f * std::log(u1)) * sigma;
    x[size_t(i)] = r * std::cos(6.2831853f * u2);
    if (i + 1 < n) x[size_t(i + 1)] = r * std::sin(6.2831853f * u2);
  }
  return x;
}

// The elements of a host tensor as a vector (for EXPECT_EQ on QuantTensor parts).
template <typename T>
std::vector<T> elements(const Tensor& t) {
  return t.defined() ? std::vector<T>(t.data<T>(), t.data<T>() + t.numel()) : std::vector<T>{};
}

// A 1-D host tensor holding `v`.
template <typename T>
Tensor tensor_of(const std::vector<T>& v, DType dtype) {
  Tensor t = Tensor::zeros({int64_t(v.size())}, dtype);
  std::copy(v.begin(), v.end(), t.data<T>());
  return t;
}

}  // namespace qlora::test
