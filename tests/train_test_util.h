// Helpers for the training tests: tiny committed models (tests/golden/fixtures), hand-made
// training sequences (padding and packing), and element access to params of either precision.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "core/rng.h"
#include "data/packing.h"
#include "model/loader.h"
#include "test_paths.h"
#include "train/batch.h"
#include "train/train_model.h"

namespace qlora::test {

inline LlamaModelFile load_fixture(const std::string& name) {
  return load_model(source_path("tests/golden/fixtures/" + name));
}

// A sequence of `length` positions: `n_examples` packed examples of random ids from [0, vocab)
// filling `used` positions, the rest padding; labels on all but the first 2 tokens of each example.
inline TrainSequence random_sequence(Rng& rng, int64_t vocab, int length, int used, int n_examples) {
  TrainSequence s;
  s.n_examples = n_examples;
  const int per = used / n_examples;
  for (int t = 0; t < length; ++t) {
    const int example = t < used ? std::min(t / per, n_examples - 1) : -1;
    const int pos = example < 0 ? 0 : t - example * per;
    const int32_t id = int32_t(rng.next_u64() % uint64_t(vocab));
    s.ids.push_back(example < 0 ? 0 : id);
    s.labels.push_back(example < 0 || pos < 2 ? -100 : id);
    s.position_ids.push_back(pos);
    s.segment_ids.push_back(example);
  }
  return s;
}

inline std::vector<TrainSequence> random_sequences(uint64_t seed, int64_t vocab, int count, int length) {
  Rng rng(seed);
  std::vector<TrainSequence> out;
  for (int i = 0; i < count; ++i) {
    const int used = length - int(rng.next_u64() % 3);  // some padding at the end
    out.push_back(random_sequence(rng, vocab, length, used, 1 + int(rng.next_u64() % 2)));
  }
  return out;
}

inline double element(const Tensor& t, int64_t i) {
  return t.dtype() == DType::F64 ? t.data<double>()[i] : double(t.data<float>()[i]);
}
inline void set_element(const Tensor& t, int64_t i, double v) {
  if (t.dtype() == DType::F64) t.data<double>()[i] = v;
  else t.data<float>()[i] = float(v);
}

// Fills every lora_B (zero after PEFT's init) with seeded values so that dA is not trivially 0.
inline void randomize_lora_b(TrainModel& model, uint64_t seed, double scale) {
  Rng rng(seed);
  for (Param& p : model.parameters()) {
    if (p.name.find("lora_B") == std::string::npos) continue;
    for (int64_t i = 0; i < p.value.numel(); ++i) set_element(p.value, i, scale * (2.0 * rng.uniform() - 1.0));
  }
  model.parameters_updated();
}

}  // namespace qlora::test
