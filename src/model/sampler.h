// Next-token sampling from logits: greedy (temperature 0), temperature, nucleus (top-p), seeded.
// Tested in tests/unit/test_sampler.cpp.
#pragma once
#include <cstdint>

#include "core/rng.h"

namespace qlora {

struct SamplingOptions {
  float temperature = 0.0f;  // 0 = greedy (argmax)
  float top_p = 1.0f;        // keep the smallest set of tokens whose probability mass >= top_p
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(SamplingOptions options);
  // Picks a token from logits (V). Ties in greedy mode go to the lowest id, as torch.argmax.
  int32_t sample(const float* logits, int64_t V);

 private:
  SamplingOptions options_;
  Rng rng_;
};

int32_t argmax(const float* values, int64_t n);

}  // namespace qlora
