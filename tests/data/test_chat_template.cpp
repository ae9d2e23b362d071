// Chat templates: the Jinja-subset interpreter renders SmolLM2's template (from the GGUF), the
// Llama-2/Llama-3/Mistral/ChatML templates, Qwen3's (thinking in content or reasoning_content,
// enable_thinking on, off and unset) and a feature-coverage template byte-identically to
// transformers' apply_chat_template (golden/chat_template_golden.json, made by
// golden/make_chat_template_golden.py); the built-in templates are the same strings; unsupported
// Jinja fails with an error naming the construct.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "data/chat_template.h"
#include "data/jinja.h"
#include "io/gguf.h"
#include "test_paths.h"
#include "tokenizer_test_util.h"

namespace qlora {
namespace {

using nlohmann::json;

json load_golden() {
  std::ifstream in(test::source_path("tests/data/golden/chat_template_golden.json"));
  return json::parse(in);
}

std::vector<ChatMessage> to_messages(const json& conv) {
  std::vector<ChatMessage> out;
  for (const auto& m : conv)
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>(), m.value("reasoning_content", "")});
  return out;
}

void check_golden_cases(const json& golden, const std::string& name, ChatTemplate tmpl) {
  int checked = 0;
  for (const auto& c : golden["cases"]) {
    if (c["template"] != name) continue;
    const auto messages = to_messages(golden["conversations"][c["conversation"].get<size_t>()]);
    const bool gen = c["add_generation_prompt"].get<bool>();
    tmpl.set_kwargs(c.value("kwargs", json::object()));
    SCOPED_TRACE(fmt::format("template {} conversation {} add_generation_prompt {} kwargs {}", name,
                             c["conversation"].get<int>(), gen, tmpl.kwargs().dump()));
    if (c.contains("error")) {
      try {
        tmpl.render(messages, gen);
        ADD_FAILURE() << "expected raise_exception: " << c["error"];
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(c["error"].get<std::string>()), std::string::npos) << e.what();
      }
    } else {
      EXPECT_EQ(tmpl.render(messages, gen), c["text"].get<std::string>());
    }
    ++checked;
  }
  EXPECT_GT(checked, 0) << "no golden cases for " << name;
}

TEST(ChatTemplate, MatchesTransformersGoldens) {
  const json golden = load_golden();
  for (const auto& [name, source] : golden["templates"].items()) {
    const ChatTemplate tmpl(name, source.get<std::string>(), golden["bos_token"], golden["eos_token"]);
    check_golden_cases(golden, name, tmpl);
  }
}

TEST(ChatTemplate, BuiltinsAreTheHuggingFaceTemplates) {
  const json golden = load_golden();
  for (const std::string name : {"chatml", "llama-2", "llama-3", "mistral"}) {
    EXPECT_EQ(ChatTemplate::builtin_source(name), golden["templates"][name].get<std::string>()) << name;
    check_golden_cases(golden, name, ChatTemplate::builtin(name, golden["bos_token"], golden["eos_token"]));
  }
  EXPECT_THROW(ChatTemplate::builtin_source("vicuna"), Error);
}

TEST(ChatTemplate, SmolLM2TemplateFromGguf) {
  const std::string model = test::source_path("models/SmolLM2-135M-Instruct.Q4_1.gguf");
  if (!test::exists(model)) GTEST_SKIP() << model << " missing (scripts/fetch_models.sh)";
  const json golden = load_golden();
  const ChatTemplate tmpl = ChatTemplate::from_model(model, golden["bos_token"], golden["eos_token"]);
  EXPECT_EQ(tmpl.source(), golden["templates"]["smollm2"].get<std::string>());
  check_golden_cases(golden, "smollm2", tmpl);
}

TEST(ChatTemplate, FromTokenizerConfig) {
  test::ScratchDir dir("qlora_chat_template_cfg");
  test::write_file(dir.file("tokenizer_config.json"), R"({"chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"})");
  EXPECT_EQ(ChatTemplate::from_model(dir.str(), "<s>", "</s>").render({{"user", "hi"}}, false), "<s>hi");
  EXPECT_EQ(ChatTemplate::from_model(dir.file("tokenizer.json"), "<s>", "</s>").render({{"user", "x"}}, false), "<s>x");
  test::write_file(dir.file("tokenizer_config.json"),
                   R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})");
  EXPECT_EQ(ChatTemplate::from_model(dir.str(), "<s>", "</s>").render({}, false), "D");
  test::write_file(dir.file("tokenizer_config.json"), R"({"bos_token": "<s>"})");
  try {
    ChatTemplate::from_model(dir.str(), "<s>", "</s>");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer_config.json"), std::string::npos) << e.what();
  }
}

TEST(ChatTemplate, AlpacaPrompt) {
  EXPECT_EQ(alpaca_prompt("Add.", ""),
            "Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n### Instruction:\nAdd.\n\n### Response:\n");
  EXPECT_EQ(alpaca_prompt("Add.", "1 2"),
            "Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.\n\n### Instruction:\nAdd.\n\n### "
            "Input:\n1 2\n\n### Response:\n");
  const ChatTemplate t = ChatTemplate::builtin("alpaca", "<s>", "</s>");
  EXPECT_EQ(t.render({{"user", "Add."}, {"assistant", "3"}}, false), alpaca_prompt("Add.", "") + "3</s>");
}

std::string render(const std::string& source, const json& context = json::object()) {
  return JinjaTemplate(source).render(context);
}

TEST(Jinja, Expressions) {
  EXPECT_EQ(render("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }}"), "3 -4 2 7 9");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ true ~ none }}"), "a1TrueNone");
  EXPECT_EQ(render("{{ xs[1:] }} {{ xs[-1] }} {{ xs | length }} {{ xs | join('-') }}", {{"xs", {1, 2, 3}}}),
            "[2, 3] 3 3 1-2-3");
  EXPECT_EQ(render("{{ 'yes' if 2 in xs else 'no' }} {{ 5 not in xs }}", {{"xs", {1, 2}}}), "yes True");
  EXPECT_EQ(render("{{ d.a }}{{ d['b'] }}{{ d.c }}|{{ d.get('c', 'z') }}", {{"d", {{"a", 1}, {"b", "x"}}}}), "1x|z");
  EXPECT_EQ(render("{{ x is defined }} {{ y is not defined }} {{ none is none }}", {{"x", 1}}), "True True True");
  EXPECT_EQ(render("{{ '  hi  '.strip() }}|{{ 'Hi'.upper() }}{{ 'Hi' | lower }}|{{ 'a,b'.split(',') }}"), "hi|HIhi|['a', 'b']");
  EXPECT_EQ(render("{% for k, v in d.items() %}{{ k }}={{ v }}{% if not loop.last %},{% endif %}{% endfor %}",
                   {{"d", {{"a", 1}, {"b", 2}}}}),
            "a=1,b=2");
  EXPECT_EQ(render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  // Slices with a step (Qwen3 walks messages[::-1]); expected strings are Jinja2 3.1's output.
  const json xs = {{"xs", {1, 2, 3, 4, 5}}};
  EXPECT_EQ(render("{{ xs[::-1] }} {{ xs[::2] }} {{ xs[3:0:-1] }} {{ xs[-2::-2] }} {{ xs[:-10:-1] }} {{ 'abcde'[::-2] }} "
                   "{{ xs[1:4:10] }}",
                   xs),
            "[5, 4, 3, 2, 1] [1, 3, 5] [4, 3, 2] [4, 2] [5, 4, 3, 2, 1] eca [2]");
  // namespace(): attributes set inside a loop outlive it; a plain set stays loop-local.
  EXPECT_EQ(render("{% set ns = namespace(n=0, last=none) %}{% for x in xs %}{% set ns.n = ns.n + x %}{% set local = x %}"
                   "{% if x > 3 %}{% set ns.last = x %}{% endif %}{% endfor %}{{ ns.n }} {{ ns.last }} {{ local is defined }}",
                   xs),
            "15 5 False");
  // TRL's training templates mark assistant output; the marker renders its body.
  EXPECT_EQ(render("a{% generation %}b{{ 1 + 1 }}{% endgeneration %}c"), "ab2c");
}

TEST(Jinja, WhitespaceControlAndScoping) {
  // Expected values from jinja2 with trim_blocks and lstrip_blocks, as transformers compiles.
  EXPECT_EQ(render("{% if true %}\n  a\n  {% endif %}\nb"), "  a\nb");
  EXPECT_EQ(render("x  {%- if true -%}  y  {%- endif -%}  z"), "xyz");
  EXPECT_EQ(render("{{- ' a ' -}}  {# comment #}\n b"), " a  b");
  EXPECT_EQ(render("  {% if true %}x{% endif %}"), "x");
  EXPECT_EQ(render("a  {% if true %}x{% endif %}"), "a  x");
  // A set inside a loop does not leak out of it (Jinja2 scoping).
  EXPECT_EQ(render("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}"), "21");
}

TEST(Jinja, UnsupportedConstructsAreNamed) {
  auto expect_error = [](const std::string& source, const std::string& needle, const json& ctx = json::object()) {
    try {
      render(source, ctx);
      ADD_FAILURE() << "expected an error for " << source;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("{% macro f() %}{% endmacro %}", "unsupported tag '{% macro %}'");
  expect_error("{{ x | tojson }}", "unsupported filter 'tojson'");
  expect_error("{{ foo(a=1) }}", "keyword arguments ('a=') are only supported for namespace()");
  expect_error("{{ namespace(1) }}", "keyword arguments only");
  expect_error("{% set ns.a = 1 %}", "undefined 'ns'");
  expect_error("{% set s = 'x' %}{% set s.a = 1 %}", "cannot set attribute 'a' of 's'");
  expect_error("{{ [1, 2][::0] }}", "slice step cannot be zero");
  expect_error("{{ x is callable }}", "unsupported test 'is callable'");
  expect_error("{{ foo() }}", "unsupported function 'foo()'");
  expect_error("{{ 'a'.zfill(3) }}", "unsupported method 'zfill()'");
  expect_error("{% if x %}", "missing '{% endif %}'");
  expect_error("{{ x ", "unclosed tag");
  expect_error("{{ raise_exception('boom') }}", "template raised: boom");
  expect_error("{{ 1 + 'a' }}", "unsupported operand types for '+': int and string");
  expect_error("{{ 99999999999999999999999 }}", "out of range");
}

// A template is code from a model file: int64 overflow, runaway loops, huge values and deep
// nesting are named errors (they were undefined behaviour, out-of-memory or a stack overflow;
// the fuzz reproducers in tests/fuzz/regressions/jinja/ are the same inputs at full size).
TEST(Jinja, LimitsAndOverflowAreNamedErrors) {
  auto expect_error = [](const std::string& source, const std::string& needle) {
    try {
      render(source, json::object());
      ADD_FAILURE() << "expected an error for " << source.substr(0, 80);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("{{ 9223372036854775807 + 1 }}", "integer overflow in 9223372036854775807 + 1");
  expect_error("{{ -9223372036854775807 - 2 }}", "integer overflow");
  expect_error("{{ 4611686018427387904 * 4 }}", "integer overflow");
  expect_error("{{ -(-9223372036854775807 - 1) }}", "integer overflow");
  expect_error("{{ 1" + std::string(300, '0') + ".0 | int }}", "filter 'int'");
  expect_error("{% for i in range(1000000000000) %}{% endfor %}", "range() grew past");
  expect_error("{% for i in range(2000) %}{% for j in range(2000) %}{% endfor %}{% endfor %}", "steps");
  std::string quadruple = "{% set s = 'ab' %}";
  for (int i = 0; i < 24; ++i) quadruple += "{% set s = s ~ s ~ s ~ s %}";
  expect_error(quadruple, "a string grew past");
  expect_error("{{" + std::string(2000, '(') + "1" + std::string(2000, ')') + "}}", "more than 1024 tokens");
  std::string ifs;
  for (int i = 0; i < 100; ++i) ifs += "{% if 1 %}";
  expect_error(ifs, "blocks nested deeper than 64");
  // Within the limits everything still works.
  EXPECT_EQ(render("{{ 9223372036854775806 + 1 }}{{ 2.5 | int }}{{ (((1))) }}", json::object()), "922337203685477580721");
}

// Seeded random templates from a soup of template fragments: parsing and rendering either
// succeed or throw qlora::Error, never crash or throw anything else.
TEST(Jinja, FuzzNeverCrashes) {
  const char* kParts[] = {"{{", "}}", "{%", "%}", "{#", "#}", "-", " if ", " for ", " in ", " endif ", " endfor ",
                          " else ", " elif ", " set ", "=", "x", "messages", "[", "]", "(", ")", "'a'", "\"b", "1",
                          "0", "+", "~", "%", "//", "|", " trim", " length", ".", "role", " and ", " not ", " is ",
                          " defined", ",", ":", "loop", "\n", "  ", "raise_exception", "{", "}", "none"};
  const uint64_t seed = 7;
  std::printf("jinja fuzz seed %llu\n", static_cast<unsigned long long>(seed));
  Rng rng(seed);
  const json ctx = {{"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}, {"x", 3}};
  int rendered = 0;
  for (int round = 0; round < 3000; ++round) {
    std::string src;
    const int n = 1 + int(rng.next_u64() % 24);
    for (int i = 0; i < n; ++i) src += kParts[rng.next_u64() % std::size(kParts)];
    try {
      render(src, ctx);
      ++rendered;
    } catch (const Error&) {
    } catch (const std::exception& e) {
      ADD_FAILURE() << "template " << src << ": unexpected exception " << e.what();
    }
  }
  EXPECT_GT(rendered, 0);
}

}  // namespace
}  // namespace qlora
