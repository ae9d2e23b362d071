// Seeded random numbers that are identical on every platform (std:: distributions are not):
// splitmix64 for seeding, xoshiro256** for the stream. Tested in tests/unit/test_tensor.cpp.
#pragma once
#include <cstdint>

namespace qlora {

// splitmix64 (Steele et al. 2014): the increment, and the output mix, a bijection on 64 bits that
// turns structured inputs (x, x + 1, ...) into unrelated ones. Used to derive independent seeds.
constexpr uint64_t kSplitmixIncrement = 0x9e3779b97f4a7c15ull;
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
// One splitmix64 step from state x: mix64(x + increment).
inline uint64_t splitmix64(uint64_t x) { return mix64(x + kSplitmixIncrement); }

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }
  void reseed(uint64_t seed) {
    for (auto& word : state_) {
      seed += kSplitmixIncrement;
      word = mix64(seed);
    }
  }
  uint64_t next_u64() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }
  // Uniform in [0, 1) with 24 bits of precision.
  float uniform() { return float(next_u64() >> 40) * (1.0f / 16777216.0f); }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t state_[4];
};

}  // namespace qlora
