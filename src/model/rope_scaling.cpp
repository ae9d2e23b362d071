// RoPE frequencies with Llama 3.1 frequency-dependent scaling: long wavelengths divided by
// `factor`, short ones kept, a smooth blend between low_freq and high_freq wavelengths.
#include "model/rope_scaling.h"

#include <cmath>

#include "core/error.h"

namespace qlora {

std::vector<float> rope_inverse_frequencies(const LlamaConfig& config) {
  const int64_t D = config.head_dim;
  std::vector<float> inv_freq(static_cast<size_t>(D / 2));
  for (int64_t i = 0; i < D / 2; ++i) {
    // transformers computes 1 / theta^(arange(0, D, 2) / D) in f32; do the same for bit parity.
    const float exponent = float(2 * i) / float(D);
    inv_freq[size_t(i)] = 1.0f / std::pow(float(config.rope_theta), exponent);
  }
  const RopeScaling& s = config.rope_scaling;
  if (s.type.empty() || s.type == "default") return inv_freq;
  if (s.type == "linear") {
    for (float& f : inv_freq) f = float(f / s.factor);
    return inv_freq;
  }
  if (s.type == "llama3") {
    const double old_len = double(s.original_max_position_embeddings);
    const double low_freq_wavelen = old_len / s.low_freq_factor;
    const double high_freq_wavelen = old_len / s.high_freq_factor;
    for (float& f : inv_freq) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen < high_freq_wavelen) continue;  // high frequency: unchanged
      if (wavelen > low_freq_wavelen) {
        f = float(f / s.factor);
      } else {
        const double smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = float((1.0 - smooth) * f / s.factor + smooth * f);
      }
    }
    return inv_freq;
  }
  fail("config", "rope_scaling type '{}' not supported; expected llama3 or linear", s.type);
}

}  // namespace qlora
