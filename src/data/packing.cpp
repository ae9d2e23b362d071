// Padding and packing of encoded examples into training sequences.
#include "data/packing.h"

#include "core/error.h"

namespace qlora {

namespace {

void append(TrainSequence& s, const EncodedExample& e, bool ignore_first_label) {
  const int32_t segment = s.n_examples++;
  for (size_t t = 0; t < e.ids.size(); ++t) {
    s.ids.push_back(e.ids[t]);
    s.labels.push_back(t == 0 && ignore_first_label ? kIgnoreIndex : e.labels[t]);
    s.position_ids.push_back(int32_t(t));
    s.segment_ids.push_back(segment);
  }
}

void pad_to(TrainSequence& s, int seq_len, int32_t pad_id) {
  while (s.ids.size() < size_t(seq_len)) {
    s.ids.push_back(pad_id);
    s.labels.push_back(kIgnoreIndex);
    s.position_ids.push_back(0);
    s.segment_ids.push_back(-1);
  }
}

void check_length(const EncodedExample& e, int seq_len, size_t index) {
  if (seq_len <= 0) fail("packing", "sequence length must be positive, got {}", seq_len);
  if (e.ids.size() > size_t(seq_len))
    fail("packing", "example {} has {} tokens; expected at most the sequence length {} (truncate when encoding)",
         index, e.ids.size(), seq_len);
  if (e.ids.size() != e.labels.size()) fail("packing", "example {}: {} ids but {} labels", index, e.ids.size(), e.labels.size());
}

}  // namespace

int32_t pad_id_for(const Tokenizer& tokenizer) {
  if (tokenizer.pad_id() >= 0) return tokenizer.pad_id();
  if (tokenizer.eos_id() >= 0) return tokenizer.eos_id();
  return 0;
}

std::vector<TrainSequence> pad_examples(const std::vector<EncodedExample>& examples, int seq_len, int32_t pad_id) {
  std::vector<TrainSequence> out;
  out.reserve(examples.size());
  for (size_t i = 0; i < examples.size(); ++i) {
    check_length(examples[i], seq_len, i);
    TrainSequence s;
    append(s, examples[i], false);
    pad_to(s, seq_len, pad_id);
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<TrainSequence> pack_examples(const std::vector<EncodedExample>& examples, int seq_len, int32_t pad_id) {
  std::vector<TrainSequence> out;
  TrainSequence current;
  for (size_t i = 0; i < examples.size(); ++i) {
    check_length(examples[i], seq_len, i);
    if (examples[i].ids.empty()) continue;
    if (current.ids.size() + examples[i].ids.size() > size_t(seq_len)) {
      pad_to(current, seq_len, pad_id);
      out.push_back(std::move(current));
      current = TrainSequence{};
    }
    append(current, examples[i], current.n_examples > 0);
  }
  if (current.n_examples > 0) {
    pad_to(current, seq_len, pad_id);
    out.push_back(std::move(current));
  }
  return out;
}

}  // namespace qlora
