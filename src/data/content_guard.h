// Special-token injection guard. Message content (and a prompt, and a completion) is data: a "<s>",
// "</s>" or "<|im_end|>" a user wrote in it must be encoded as text, while the control tokens the
// chat template itself writes stay control tokens. Content cannot be told apart from the
// template's text once the template has rendered it, so each special token written in content is
// replaced by a placeholder (U+FDD0 index U+FDD1; U+FDD0 is a Unicode noncharacter, never in
// interchange text, and content holding one is protected the same way) before rendering, and put
// back afterwards with its byte range marked plain for Tokenizer::encode_with_plain. Content
// without special tokens renders byte for byte as before, so templates that trim or test it
// behave as they did. Tested in tests/data/test_content_guard.cpp (toy tokenizer, SmolLM2,
// Llama 2 and Llama 3 vocabularies).
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "data/chat_template.h"
#include "data/tokenizer.h"

namespace qlora {

// Rendered text and the spans of it that came from content as special-token text.
struct GuardedText {
  std::string text;
  std::vector<TextSpan> plain;
};

class ContentGuard {
 public:
  explicit ContentGuard(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  // `content` with each special token written in it, and each U+FDD0, replaced by a placeholder.
  std::string protect(std::string_view content);
  // `rendered` with the placeholders put back and their spans marked plain. Throws Error when a
  // placeholder was cut (a template that slices content inside one).
  GuardedText restore(std::string_view rendered) const;

 private:
  const Tokenizer& tokenizer_;
  std::vector<std::string> originals_;  // by placeholder index
};

// The messages rendered by `tmpl` with their content guarded.
GuardedText render_guarded(const ChatTemplate& tmpl, const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages,
                           bool add_generation_prompt);

// Guarded rendered text as ids (plain spans as text, the rest with specials parsed), with BOS
// prepended when the tokenizer expects one and the template did not write it.
std::vector<int32_t> encode_guarded(const Tokenizer& tokenizer, const GuardedText& text);

}  // namespace qlora
