// Example -> (ids, labels): template rendering into prompt/response segments, tokenization per
// segment, BOS/EOS handling, masking and truncation.
#include "data/example_encoder.h"

#include "core/error.h"

namespace qlora {

ExampleEncoder::ExampleEncoder(const Tokenizer& tokenizer, ChatTemplate chat_template, EncodeOptions options)
    : tokenizer_(tokenizer), template_(std::move(chat_template)), options_(options) {}

std::vector<TextSegment> ExampleEncoder::segments(const Example& example) const {
  std::vector<TextSegment> out;
  for (GuardedSegment& s : guarded_segments(example)) out.emplace_back(std::move(s.text.text), s.response);
  return out;
}

std::vector<GuardedSegment> ExampleEncoder::guarded_segments(const Example& example) const {
  std::vector<GuardedSegment> out;
  // All of it data: plain unless parse_special_in_content (plain text chunks always were).
  auto data = [&](std::string text, bool response, bool always_plain) {
    GuardedSegment s{{std::move(text), {}}, response};
    if (always_plain || !options_.parse_special_in_content) s.text.plain.push_back({0, s.text.text.size()});
    out.push_back(std::move(s));
  };
  if (example.kind == Example::Kind::Text) {
    data(example.text, true, true);
    return out;
  }
  if (example.kind == Example::Kind::Instruction && template_.name() == "alpaca") {
    data(alpaca_prompt(example.instruction, example.input), false, false);
    data(example.output, true, false);
    return out;
  }
  std::vector<ChatMessage> messages = example.messages;
  if (example.kind == Example::Kind::Instruction) {
    messages = {{"user", example.input.empty() ? example.instruction : example.instruction + "\n\n" + example.input},
                {"assistant", example.output}};
  }
  ContentGuard guard(tokenizer_);
  if (!options_.parse_special_in_content)
    for (ChatMessage& m : messages) {
      m.content = guard.protect(m.content);
      m.reasoning_content = guard.protect(m.reasoning_content);
    }
  std::string done;  // text rendered so far
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != "assistant") continue;
    const std::vector<ChatMessage> before(messages.begin(), messages.begin() + long(i));
    const std::vector<ChatMessage> through(messages.begin(), messages.begin() + long(i) + 1);
    const std::string prompt = template_.render(before, true);
    const std::string full = template_.render(through, false);
    if (prompt.compare(0, done.size(), done) != 0 || full.compare(0, prompt.size(), prompt) != 0)
      fail("template", "{}: template '{}' does not render turn by turn (the rendering up to turn {} is not a "
           "prefix of the next one), so prompt and response cannot be told apart; templates that rewrite "
           "earlier turns (Qwen3 drops the thinking of turns before the last question) need a "
           "prefix-preserving training variant: chat_template: path/to/template.jinja (TRL ships "
           "trl/chat_templates/qwen3_training.jinja)",
           example.source, template_.name(), i);
    // Placeholders are whole inside one message's content, so each part restores on its own.
    auto part = [&](std::string_view text) {
      return options_.parse_special_in_content ? GuardedText{std::string(text), {}} : guard.restore(text);
    };
    out.push_back({part(std::string_view(prompt).substr(done.size())), false});
    out.push_back({part(std::string_view(full).substr(prompt.size())), true});
    done = full;
  }
  return out;
}

EncodedExample ExampleEncoder::encode(const Example& example) const {
  EncodedExample out;
  const int32_t bos = tokenizer_.bos_id(), eos = tokenizer_.eos_id();
  const bool text = example.kind == Example::Kind::Text;
  for (const auto& [segment, response] : guarded_segments(example)) {
    if (segment.text.empty()) continue;
    const bool label = response || options_.train_on_inputs;
    // The template spells its control tokens as text; content is plain where guarded.
    const std::vector<int32_t> ids = tokenizer_.encode_with_plain(segment.text, false, segment.plain);
    bool has_eog = false;
    for (int32_t id : ids) {
      out.ids.push_back(id);
      out.labels.push_back(label ? id : kIgnoreIndex);
      has_eog = has_eog || tokenizer_.is_eog(id);
    }
    // A response ends with EOS so the model learns to stop (text chunks are not documents).
    if (response && !text && !has_eog && eos >= 0) {
      out.ids.push_back(eos);
      out.labels.push_back(eos);
    }
  }
  if (tokenizer_.adds_bos() && bos >= 0 && (out.ids.empty() || out.ids[0] != bos)) {
    out.ids.insert(out.ids.begin(), bos);
    out.labels.insert(out.labels.begin(), kIgnoreIndex);  // nothing predicts BOS
  }
  if (options_.max_len > 0 && out.ids.size() > size_t(options_.max_len)) {
    out.ids.resize(size_t(options_.max_len));
    out.labels.resize(size_t(options_.max_len));
    out.truncated = true;
  }
  return out;
}

std::vector<EncodedExample> ExampleEncoder::encode_all(const std::vector<Example>& examples, EncodeStats* stats) const {
  EncodeStats s;
  std::vector<EncodedExample> out;
  out.reserve(examples.size());
  for (const auto& e : examples) {
    EncodedExample enc;
    try {
      enc = encode(e);
    } catch (const Error& err) {  // e.g. a template's raise_exception: say which example
      fail("template", "{}: {}", e.source.empty() ? "example " + std::to_string(s.examples) : e.source, err.what());
    }
    ++s.examples;
    if (enc.truncated) ++s.truncated;
    bool any = false;
    for (int32_t l : enc.labels) any = any || l != kIgnoreIndex;
    if (!any) {
      ++s.no_labels;
      continue;
    }
    out.push_back(std::move(enc));
  }
  if (stats) *stats = s;
  return out;
}

}  // namespace qlora
