// Prompt templates: the built-in formats (alpaca, chatml, llama-2, llama-3, mistral) and a model's
// own chat template (tokenizer_config.json "chat_template" or GGUF tokenizer.chat_template), all
// rendered by the Jinja-subset interpreter (data/jinja.h) the way transformers'
// apply_chat_template renders them. Tested in tests/data/test_chat_template.cpp against goldens
// from transformers (tests/data/golden/make_chat_template_golden.py).
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/jinja.h"

namespace qlora {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" (or "tool")
  std::string content;
  // An assistant's thinking apart from its answer (Qwen3's `reasoning_content`); templates that
  // know the field render it (Qwen3 as <think>...</think>), others ignore it. Empty: absent.
  std::string reasoning_content = {};
};

// The Stanford Alpaca prompt (with and without an input), up to and including "### Response:\n".
std::string alpaca_prompt(const std::string& instruction, const std::string& input);

class ChatTemplate {
 public:
  // A template from Jinja source; throws Error naming an unsupported construct.
  ChatTemplate(std::string name, const std::string& source, std::string bos_token, std::string eos_token);

  // "alpaca", "chatml", "llama-2", "llama-3", "mistral"; throws Error listing them otherwise.
  static ChatTemplate builtin(const std::string& name, const std::string& bos_token, const std::string& eos_token);
  static const std::vector<std::string>& builtin_names();
  static std::string builtin_source(const std::string& name);
  // The model's own template: tokenizer.chat_template in a GGUF, or "chat_template" in
  // tokenizer_config.json (a model folder, or beside a tokenizer/model file). Throws Error naming
  // the places looked at when there is none.
  static ChatTemplate from_model(const std::string& path, const std::string& bos_token, const std::string& eos_token);

  // apply_chat_template(messages, tokenize=False, add_generation_prompt=..., **kwargs()).
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  // Extra template variables, as apply_chat_template's keyword arguments (`chat_template_kwargs`
  // in TRL): {"enable_thinking": false} for Qwen3. A JSON object; throws Error otherwise, or when
  // it would override messages, add_generation_prompt, bos_token or eos_token.
  void set_kwargs(const nlohmann::json& kwargs);
  const nlohmann::json& kwargs() const { return kwargs_; }

  const std::string& name() const { return name_; }
  const std::string& source() const { return source_; }

 private:
  std::string name_, source_, bos_token_, eos_token_;
  nlohmann::json kwargs_ = nlohmann::json::object();
  JinjaTemplate template_;
};

}  // namespace qlora
