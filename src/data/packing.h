// Encoded examples -> fixed-length training sequences, by padding (one example per sequence) or
// packing (several examples per sequence). Packed sequences carry position ids that restart at 0
// for every example and segment ids (0, 1, ... per example, -1 on padding) so attention can be
// restricted to the same segment and no attention crosses examples (the flash-attention
// "varlen"/HF DataCollatorWithFlattening convention). The first label of every packed example is
// ignored so no token is trained to predict the start of the next example.
// Tested in tests/data/test_packing.cpp.
#pragma once
#include <cstdint>
#include <vector>

#include "data/example_encoder.h"

namespace qlora {

struct TrainSequence {
  std::vector<int32_t> ids;           // (T)
  std::vector<int32_t> labels;        // (T) kIgnoreIndex on prompt and padding
  std::vector<int32_t> position_ids;  // (T) restart at 0 per example; 0 on padding
  std::vector<int32_t> segment_ids;   // (T) example index within the sequence; -1 on padding
  int32_t n_examples = 0;

  // Whether query position q may attend to key position k: causal and within one example.
  bool can_attend(size_t q, size_t k) const {
    return k <= q && segment_ids[q] >= 0 && segment_ids[q] == segment_ids[k];
  }
};

// The pad id to use: the tokenizer's pad, else EOS, else 0. Padding is never labelled, so
// pad == eos does not hide the EOS labels.
int32_t pad_id_for(const Tokenizer& tokenizer);

// One example per sequence, padded to seq_len (longer examples throw: truncate when encoding).
std::vector<TrainSequence> pad_examples(const std::vector<EncodedExample>& examples, int seq_len, int32_t pad_id);
// Packs examples in order (next fit: a new sequence starts when the next example does not fit),
// padding each sequence to seq_len. Throws Error for an example longer than seq_len.
std::vector<TrainSequence> pack_examples(const std::vector<EncodedExample>& examples, int seq_len, int32_t pad_id);

}  // namespace qlora
