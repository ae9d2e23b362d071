// Greedy, temperature and top-p sampling.
#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"

namespace qlora {

int32_t argmax(const float* values, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (values[i] > values[best]) best = i;
  return int32_t(best);
}

Sampler::Sampler(SamplingOptions options) : options_(options), rng_(options.seed) {
  if (options_.temperature < 0.0f || !std::isfinite(options_.temperature))
    fail("sampler", "temperature must be >= 0, got {}", options_.temperature);
  if (!(options_.top_p > 0.0f && options_.top_p <= 1.0f))
    fail("sampler", "top-p must be in (0, 1], got {}", options_.top_p);
}

int32_t Sampler::sample(const float* logits, int64_t V) {
  if (options_.temperature == 0.0f) return argmax(logits, V);
  const float max_logit = logits[argmax(logits, V)];
  std::vector<float> probs(static_cast<size_t>(V));
  double sum = 0.0;
  for (int64_t i = 0; i < V; ++i) {
    probs[size_t(i)] = std::exp((logits[i] - max_logit) / options_.temperature);
    sum += probs[size_t(i)];
  }
  for (float& p : probs) p = float(p / sum);
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  float mass = 1.0f;
  size_t keep = size_t(V);
  if (options_.top_p < 1.0f) {
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      return probs[size_t(a)] > probs[size_t(b)] || (probs[size_t(a)] == probs[size_t(b)] && a < b);
    });
    mass = 0.0f;
    keep = 0;
    while (keep < order.size() && mass < options_.top_p) mass += probs[size_t(order[keep++])];
  }
  const float r = rng_.uniform() * mass;
  float acc = 0.0f;
  for (size_t i = 0; i < keep; ++i) {
    acc += probs[size_t(order[i])];
    if (r < acc) return order[i];
  }
  return order[keep - 1];
}

}  // namespace qlora
