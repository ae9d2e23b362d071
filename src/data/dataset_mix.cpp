// Seeded shuffling, splitting and weighted mixing of examples.
#include "data/dataset_mix.h"

#include <cmath>

#include "core/error.h"
#include "core/rng.h"

namespace qlora {

namespace {

// Uniform in [0, n) without modulo bias worth caring about for n << 2^64 (Lemire's multiply).
size_t below(Rng& rng, size_t n) { return size_t((static_cast<unsigned __int128>(rng.next_u64()) * n) >> 64); }

void shuffle(std::vector<size_t>& v, Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(rng, i)]);
}

}  // namespace

std::vector<size_t> shuffled_indices(size_t n, uint64_t seed) {
  std::vector<size_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = i;
  Rng rng(seed);
  shuffle(v, rng);
  return v;
}

SplitIndices split_indices(size_t n, double validation, uint64_t seed) {
  if (!(validation >= 0)) fail("dataset", "validation size must be >= 0, got {}", validation);
  const size_t n_val = validation < 1 ? size_t(std::llround(validation * double(n))) : size_t(validation);
  if (n_val > n) fail("dataset", "validation size {} exceeds the {} examples", n_val, n);
  const std::vector<size_t> order = shuffled_indices(n, seed);
  SplitIndices out;
  out.validation.assign(order.begin(), order.begin() + long(n_val));
  out.train.assign(order.begin() + long(n_val), order.end());
  return out;
}

std::vector<std::pair<size_t, size_t>> mix_datasets(const std::vector<size_t>& sizes, const std::vector<double>& weights,
                                                    size_t total, uint64_t seed) {
  if (sizes.size() != weights.size())
    fail("dataset", "mixing {} datasets needs as many weights, got {}", sizes.size(), weights.size());
  double sum = 0;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (!(weights[d] >= 0) || !std::isfinite(weights[d])) fail("dataset", "weight {} of dataset {} must be >= 0", weights[d], d);
    if (weights[d] > 0 && sizes[d] == 0) fail("dataset", "dataset {} is empty but has weight {}", d, weights[d]);
    sum += weights[d];
  }
  if (sum <= 0) fail("dataset", "mixing weights sum to {}; expected a positive sum", sum);
  std::vector<double> cumulative;
  double acc = 0;
  for (double w : weights) cumulative.push_back(acc += w / sum);
  Rng rng(seed);
  std::vector<std::vector<size_t>> order(sizes.size());
  std::vector<size_t> cursor(sizes.size(), 0);
  std::vector<std::pair<size_t, size_t>> out;
  out.reserve(total);
  for (size_t i = 0; i < total; ++i) {
    const double u = double(rng.next_u64() >> 11) * (1.0 / 9007199254740992.0);  // 53 bits
    size_t d = sizes.size();
    for (size_t k = 0; k < sizes.size(); ++k) {
      if (weights[k] <= 0) continue;
      d = k;  // rounding can leave u above the last cumulative sum: take the last weighted dataset
      if (u < cumulative[k]) break;
    }
    if (cursor[d] == 0 || cursor[d] == sizes[d]) {  // (re)shuffle the dataset's order
      if (order[d].empty()) {
        order[d].resize(sizes[d]);
        for (size_t k = 0; k < sizes[d]; ++k) order[d][k] = k;
      }
      shuffle(order[d], rng);
      cursor[d] = 0;
    }
    out.emplace_back(d, order[d][cursor[d]++]);
  }
  return out;
}

}  // namespace qlora
