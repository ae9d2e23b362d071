// A small interpreter for the subset of Jinja2 that chat templates use (Hugging Face
// tokenizer_config.json "chat_template", GGUF tokenizer.chat_template), configured as
// transformers compiles them: trim_blocks and lstrip_blocks on.
//
// Supported: text, {{ expr }}, {% if/elif/else/endif %}, {% for x in xs %} / {% for a, b in xs %}
// with loop.index/index0/first/last/length/revindex/revindex0, {% set name = expr %}, comments,
// whitespace control ({%- -%} {{- -}}); literals (strings, ints, floats, true/false/none, lists,
// dicts), variables, indexing, slicing, attribute access, + - * / // % ~, comparisons, in / not
// in, and/or/not, `x if c else y`, tests (is defined/none/string/number/mapping/iterable/even/odd),
// filters (trim, length, count, upper, lower, capitalize, first, last, string, int, join, default),
// string methods (strip, lstrip, rstrip, upper, lower, startswith, endswith, replace, split) and
// dict methods (items, keys, values, get), raise_exception(msg) and range(n).
// Anything else (macro, namespace, include, unknown filters...) fails with an Error naming the
// construct. Tested in tests/data/test_chat_template.cpp against transformers' apply_chat_template.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace qlora {

namespace jinja {
struct Node;
}

class JinjaTemplate {
 public:
  // Parses the template; throws Error("[jinja] ...") naming an unsupported construct or a syntax
  // error with its position.
  explicit JinjaTemplate(const std::string& source);
  ~JinjaTemplate();
  // Copies share the parsed (immutable) tree.
  JinjaTemplate(const JinjaTemplate&);
  JinjaTemplate& operator=(const JinjaTemplate&);
  JinjaTemplate(JinjaTemplate&&) noexcept;
  JinjaTemplate& operator=(JinjaTemplate&&) noexcept;

  // Renders with the given variables (a JSON object). raise_exception(msg) throws
  // Error("[jinja] template raised: msg").
  std::string render(const nlohmann::json& context) const;

 private:
  std::shared_ptr<const jinja::Node> root_;
};

}  // namespace qlora
