// Examples -> token ids and labels for supervised fine-tuning. Labels are -100 (ignored by the
// loss) on prompt tokens so the loss covers only responses, unless train_on_inputs; in chats only
// assistant turns are labelled. The EOS that ends a response is always labelled (appended when the
// template's response holds no end-of-generation token), whatever the pad id is, because labels
// come from the example's structure, never from comparing ids with pad. Plain text is labelled
// throughout. Sequences longer than max_len are truncated and counted.
// Chats are split into prompt/response text by rendering the template incrementally: the prompt
// before assistant turn i is render(messages[:i], add_generation_prompt=true) minus what came
// before; a template whose renderings are not prefixes of each other is rejected.
// Tested in tests/data/test_example_encoder.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/ignore_index.h"
#include "data/chat_template.h"
#include "data/dataset.h"
#include "data/content_guard.h"
#include "data/tokenizer.h"

namespace qlora {


struct EncodeOptions {
  bool train_on_inputs = false;  // also label prompt tokens
  int max_len = 2048;            // truncate longer sequences (<= 0: no limit)
  // Special tokens written in message content ("<s>", "<|im_end|>") become control tokens, as
  // Hugging Face's apply_chat_template + encode does. Off: content is text (data/content_guard.h);
  // the template's own control tokens are special either way.
  bool parse_special_in_content = false;
};

struct EncodedExample {
  std::vector<int32_t> ids;     // (T)
  std::vector<int32_t> labels;  // (T) the id where the loss applies, kIgnoreIndex elsewhere
  bool truncated = false;
};

struct EncodeStats {
  size_t examples = 0;
  size_t truncated = 0;
  size_t no_labels = 0;  // dropped by encode_all: nothing left to train on after truncation
};

// One segment of rendered text and whether it is a response (labelled).
using TextSegment = std::pair<std::string, bool>;
// A segment with the spans of it to encode as plain text (data/content_guard.h).
struct GuardedSegment {
  GuardedText text;
  bool response = false;
};

class ExampleEncoder {
 public:
  // Instruction examples use the Alpaca prompt when the template is "alpaca", else become a
  // user turn (instruction, a blank line, input) and an assistant turn rendered by the template.
  ExampleEncoder(const Tokenizer& tokenizer, ChatTemplate chat_template, EncodeOptions options);

  // The example as prompt/response text segments, in order.
  std::vector<TextSegment> segments(const Example& example) const;
  std::vector<GuardedSegment> guarded_segments(const Example& example) const;
  EncodedExample encode(const Example& example) const;
  // Encodes all examples, dropping (and counting) those without any label left.
  std::vector<EncodedExample> encode_all(const std::vector<Example>& examples, EncodeStats* stats = nullptr) const;

  const ChatTemplate& chat_template() const { return template_; }
  const EncodeOptions& options() const { return options_; }

 private:
  const Tokenizer& tokenizer_;
  ChatTemplate template_;
  EncodeOptions options_;
};

}  // namespace qlora
