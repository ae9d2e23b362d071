// Built-in prompt templates as Jinja source (the Hugging Face tokenizer_config.json spellings of
// the Llama-2-chat, Meta-Llama-3-Instruct and Mistral-7B-Instruct-v0.1 templates, ChatML as
// SmolLM2/Qwen use it, and Stanford Alpaca's prompt), and loading a model's own template.
#include "data/chat_template.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/gguf.h"

namespace qlora {

namespace {

// Alpaca for chats: each user turn becomes an instruction, a system message the preamble.
const char* kAlpaca =
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'Below is an instruction that describes a task. Write a response "
    "that appropriately completes the request.\\n\\n### Instruction:\\n' + message['content'] + "
    "'\\n\\n### Response:\\n' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% if not loop.last %}{{ '\\n\\n' }}{% endif %}{% endif %}{% endfor %}";
const char* kChatml =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
const char* kLlama2 =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif "
    "%}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
    "loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
    "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] "
    "== 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
const char* kLlama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' "
    "%}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if "
    "add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
const char* kMistral =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
    "message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
    "'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles "
    "are supported!') }}{% endif %}{% endfor %}";

}  // namespace

std::string alpaca_prompt(const std::string& instruction, const std::string& input) {
  if (input.empty())
    return "Below is an instruction that describes a task. Write a response that appropriately completes the "
           "request.\n\n### Instruction:\n" + instruction + "\n\n### Response:\n";
  return "Below is an instruction that describes a task, paired with an input that provides further context. "
         "Write a response that appropriately completes the request.\n\n### Instruction:\n" + instruction +
         "\n\n### Input:\n" + input + "\n\n### Response:\n";
}

ChatTemplate::ChatTemplate(std::string name, const std::string& source, std::string bos_token, std::string eos_token)
    : name_(std::move(name)),
      source_(source),
      bos_token_(std::move(bos_token)),
      eos_token_(std::move(eos_token)),
      template_(source) {}

const std::vector<std::string>& ChatTemplate::builtin_names() {
  static const std::vector<std::string> names = {"alpaca", "chatml", "llama-2", "llama-3", "mistral"};
  return names;
}

std::string ChatTemplate::builtin_source(const std::string& name) {
  if (name == "alpaca") return kAlpaca;
  if (name == "chatml") return kChatml;
  if (name == "llama-2") return kLlama2;
  if (name == "llama-3") return kLlama3;
  if (name == "mistral") return kMistral;
  fail("template", "unknown template '{}'; expected one of {} or 'model' (the model's own chat_template)", name,
       fmt::join(builtin_names(), ", "));
}

ChatTemplate ChatTemplate::builtin(const std::string& name, const std::string& bos_token,
                                   const std::string& eos_token) {
  return ChatTemplate(name, builtin_source(name), bos_token, eos_token);
}

ChatTemplate ChatTemplate::from_model(const std::string& path, const std::string& bos_token,
                                      const std::string& eos_token) {
  namespace fs = std::filesystem;
  if (fs::is_regular_file(path) && fs::path(path).extension() == ".gguf") {
    const GgufFile f = GgufFile::open(path);
    if (!f.has("tokenizer.chat_template"))
      fail("template", "{} has no tokenizer.chat_template; pick a built-in template ({})", path,
           fmt::join(builtin_names(), ", "));
    return ChatTemplate("model", f.get("tokenizer.chat_template").as_string("tokenizer.chat_template"), bos_token,
                        eos_token);
  }
  const fs::path dir = fs::is_directory(path) ? fs::path(path) : fs::path(path).parent_path();
  const fs::path cfg = dir / "tokenizer_config.json";
  if (fs::exists(cfg)) {
    std::ifstream in(cfg);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      fail("template", "{}: invalid JSON: {}", cfg.string(), e.what());
    }
    if (j.contains("chat_template")) {
      const auto& t = j["chat_template"];
      if (t.is_string()) return ChatTemplate("model", t.get<std::string>(), bos_token, eos_token);
      // Newer configs hold a list of named templates; "default" is the one apply_chat_template uses.
      if (t.is_array())
        for (const auto& entry : t)
          if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template"))
            return ChatTemplate("model", entry["template"].get<std::string>(), bos_token, eos_token);
      fail("template", "{}: chat_template is neither a string nor a list with a 'default' entry", cfg.string());
    }
  }
  const fs::path jinja_file = dir / "chat_template.jinja";  // transformers >= 4.43 saves it apart
  if (fs::exists(jinja_file)) {
    std::ifstream in(jinja_file, std::ios::binary);
    return ChatTemplate("model", std::string(std::istreambuf_iterator<char>(in), {}), bos_token, eos_token);
  }
  fail("template", "no chat template for {}: looked for tokenizer.chat_template (GGUF), {} and {}", path,
       cfg.string(), jinja_file.string());
}

namespace {
constexpr const char* kReservedVariables[] = {"messages", "add_generation_prompt", "bos_token", "eos_token"};
}

void ChatTemplate::set_kwargs(const nlohmann::json& kwargs) {
  if (!kwargs.is_object())
    fail("template", "chat template kwargs must be an object ({{\"enable_thinking\": false}}), got {} {}",
         kwargs.type_name(), kwargs.dump());
  for (const char* reserved : kReservedVariables)
    if (kwargs.contains(reserved))
      fail("template", "chat template kwargs cannot set '{}': the conversation sets it", reserved);
  kwargs_ = kwargs;
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  nlohmann::json msgs = nlohmann::json::array();
  for (const auto& m : messages) {
    nlohmann::json msg = {{"role", m.role}, {"content", m.content}};
    if (!m.reasoning_content.empty()) msg["reasoning_content"] = m.reasoning_content;
    msgs.push_back(std::move(msg));
  }
  nlohmann::json context = kwargs_;
  context["messages"] = std::move(msgs);
  context["add_generation_prompt"] = add_generation_prompt;
  context["bos_token"] = bos_token_;
  context["eos_token"] = eos_token_;
  return template_.render(context);
}

}  // namespace qlora
