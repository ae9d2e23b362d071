// ContentGuard, render_guarded, encode_guarded. See content_guard.h.
#include "data/content_guard.h"

#include <algorithm>

#include "core/error.h"

namespace qlora {
namespace {

constexpr std::string_view kOpen = "\xEF\xB7\x90";   // U+FDD0
constexpr std::string_view kClose = "\xEF\xB7\x91";  // U+FDD1

}  // namespace

std::string ContentGuard::protect(std::string_view content) {
  std::vector<TextSpan> spans = tokenizer_.special_spans(content);
  // U+FDD0 in the content itself would read as a placeholder: protect it the same way.
  for (size_t at = content.find(kOpen); at != std::string_view::npos; at = content.find(kOpen, at + kOpen.size()))
    spans.push_back({at, at + kOpen.size()});
  if (spans.empty()) return std::string(content);
  std::sort(spans.begin(), spans.end(), [](const TextSpan& a, const TextSpan& b) { return a.begin < b.begin; });
  std::string out;
  size_t pos = 0;
  for (const TextSpan& s : spans) {
    if (s.begin < pos) continue;  // U+FDD0 cannot overlap a special token's ASCII text; be safe
    out.append(content.substr(pos, s.begin - pos));
    out.append(kOpen).append(std::to_string(originals_.size())).append(kClose);
    originals_.emplace_back(content.substr(s.begin, s.end - s.begin));
    pos = s.end;
  }
  out.append(content.substr(pos));
  return out;
}

GuardedText ContentGuard::restore(std::string_view rendered) const {
  GuardedText out;
  size_t pos = 0;
  for (size_t at = rendered.find(kOpen); at != std::string_view::npos; at = rendered.find(kOpen, pos)) {
    out.text.append(rendered.substr(pos, at - pos));
    size_t p = at + kOpen.size(), index = 0;
    bool digits = false;
    while (p < rendered.size() && rendered[p] >= '0' && rendered[p] <= '9' && index < originals_.size())
      index = index * 10 + size_t(rendered[p++] - '0'), digits = true;
    if (!digits || index >= originals_.size() || rendered.substr(p, kClose.size()) != kClose)
      fail("template", "the chat template cut a message's content inside a special token written in it; "
           "set parse_special_in_content: true to render such content unguarded");
    const size_t begin = out.text.size();
    out.text.append(originals_[index]);
    out.plain.push_back({begin, out.text.size()});
    pos = p + kClose.size();
  }
  out.text.append(rendered.substr(pos));
  return out;
}

GuardedText render_guarded(const ChatTemplate& tmpl, const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages,
                           bool add_generation_prompt) {
  ContentGuard guard(tokenizer);
  std::vector<ChatMessage> protected_messages = messages;
  for (ChatMessage& m : protected_messages) {
    m.content = guard.protect(m.content);
    m.reasoning_content = guard.protect(m.reasoning_content);
  }
  return guard.restore(tmpl.render(protected_messages, add_generation_prompt));
}

std::vector<int32_t> encode_guarded(const Tokenizer& tokenizer, const GuardedText& text) {
  std::vector<int32_t> ids = tokenizer.encode_with_plain(text.text, false, text.plain);
  const int32_t bos = tokenizer.bos_id();
  if (tokenizer.adds_bos() && bos >= 0 && (ids.empty() || ids[0] != bos)) ids.insert(ids.begin(), bos);
  return ids;
}

}  // namespace qlora
