// `qlora chat MODEL [--adapter DIR] [--system TEXT] [--template NAME] [--chat-template-kwargs JSON]
//  [--max-tokens N] [--temperature T] [--top-p P] [--seed S] [--prompt TEXT]`: an interactive
// conversation on stdin, one user message per line (a terminal or a pipe), rendered with the model's chat template and
// answered with streamed tokens until an end-of-generation token. The conversation is kept: each
// turn re-renders it, and only the tokens after the longest prefix already in the KV cache are run
// (a template that rewrites earlier text costs a re-prefill, nothing more). "/reset" starts over,
// "/exit" (or end of input) quits; --prompt answers one message and exits.
// Tested in tests/e2e/test_cli_eval_chat.cpp (piped stdin).
#include <fmt/core.h>
#include <unistd.h>

#include <iostream>
#include <random>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "model/sampler.h"

namespace qlora::cli {

namespace {

struct ChatOptions {
  ModelOptions model;
  std::string tokenizer_path;
  std::string system;
  std::string template_name = "auto";
  std::string template_kwargs;  // JSON object
  std::string prompt;
  int64_t max_tokens = 512;
  float temperature = 0.7f;
  float top_p = 0.95f;
  int64_t seed = -1;
};

class Conversation {
 public:
  Conversation(const LlamaModel& model, const Tokenizer& tokenizer, ChatTemplate chat_template, const ChatOptions& o,
               uint64_t seed)
      : model_(model),
        tokenizer_(tokenizer),
        template_(std::move(chat_template)),
        options_(o),
        sampler_({o.temperature, o.top_p, seed}),
        cache_(model.config(), model.config().max_position_embeddings) {
    reset();
  }

  void reset() {
    messages_.clear();
    if (!options_.system.empty()) messages_.push_back({"system", options_.system});
    cached_.clear();
    cache_.clear();
  }

  // Answers one user message, streaming the reply to stdout; returns false when the context is full.
  bool reply(const std::string& user) {
    messages_.push_back({"user", user});
    const std::vector<int32_t> ids = encode_chat(tokenizer_, template_, messages_);
    const int64_t context = cache_.capacity();
    if (int64_t(ids.size()) >= context) {
      messages_.pop_back();
      fmt::print(stderr, "[chat] the conversation ({} tokens) fills the context of {}; /reset to start over\n",
                 ids.size(), context);
      return false;
    }
    // Reuse the cached positions that match the new rendering; at least one token must run to get logits.
    size_t keep = 0;
    while (keep < cached_.size() && keep < ids.size() && cached_[keep] == ids[keep]) ++keep;
    if (keep == ids.size()) --keep;
    cache_.truncate(int64_t(keep));
    cached_.resize(keep);
    const Tensor logits = model_.forward(cache_, ids.data() + keep, int64_t(ids.size() - keep), false);
    cached_.insert(cached_.end(), ids.begin() + long(keep), ids.end());
    std::string text;
    const std::vector<int32_t> out =
        generate_tokens(model_, tokenizer_, cache_, logits, sampler_, options_.max_tokens, ids.back(),
                        [&](const std::string& piece) {
                          text += piece;
                          fmt::print("{}", piece);
                          std::fflush(stdout);
                        });
    fmt::print("\n");
    std::fflush(stdout);
    // generate_tokens ran every token but the last through the model.
    cached_.insert(cached_.end(), out.begin(), out.end());
    cached_.resize(size_t(cache_.size()));
    messages_.push_back({"assistant", text});
    return true;
  }

 private:
  const LlamaModel& model_;
  const Tokenizer& tokenizer_;
  ChatTemplate template_;
  const ChatOptions& options_;
  Sampler sampler_;
  KvCache cache_;
  std::vector<ChatMessage> messages_;
  std::vector<int32_t> cached_;  // the ids whose keys/values are in cache_, positions [0, cache_.size())
};

void run_chat(const ChatOptions& o) {
  const LlamaModel model = load_for_inference(o.model);
  const auto tokenizer = load_model_tokenizer(o.model.model_path, o.tokenizer_path);
  if (tokenizer->vocab_size() > model.config().vocab_size)
    fail("chat", "tokenizer has {} tokens but the model's vocabulary is {}", tokenizer->vocab_size(),
         model.config().vocab_size);
  ChatTemplate chat_template = load_chat_template(o.model.model_path, *tokenizer, o.template_name);
  chat_template.set_kwargs(parse_template_kwargs(o.template_kwargs));
  const uint64_t seed = o.seed >= 0 ? uint64_t(o.seed) : std::random_device{}();
  Conversation conversation(model, *tokenizer, std::move(chat_template), o, seed);
  if (!o.prompt.empty()) {
    if (!conversation.reply(o.prompt)) fail("chat", "the prompt does not fit the model's context");
    return;
  }
  const bool tty = isatty(STDIN_FILENO) != 0;
  if (tty) fmt::print(stderr, "chat with {} ({}): /reset starts over, /exit or Ctrl-D quits\n", o.model.model_path,
                      o.model.adapter_path.empty() ? "no adapter" : "adapter " + o.model.adapter_path);
  std::string line;
  while (true) {
    if (tty) {
      fmt::print("> ");
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      conversation.reset();
      fmt::print(stderr, "[conversation reset]\n");
      continue;
    }
    conversation.reply(line);
  }
}

}  // namespace

void register_chat(CLI::App& app) {
  auto o = std::make_shared<ChatOptions>();
  CLI::App* cmd = app.add_subcommand("chat", "Chat with a model on stdin (one message per line)");
  add_model_options(*cmd, o->model);
  add_adapter_option(*cmd, o->model);
  add_tokenizer_option(*cmd, o->tokenizer_path);
  cmd->add_option("--system", o->system, "system message");
  cmd->add_option("--template", o->template_name, "chat template: auto (the model's), a built-in name or a .jinja file");
  cmd->add_option("--chat-template-kwargs", o->template_kwargs,
                  "template variables as a JSON object, e.g. '{\"enable_thinking\": false}' (Qwen3)");
  cmd->add_option("--prompt,-p", o->prompt, "answer this one message and exit");
  cmd->add_option("--max-tokens,-n", o->max_tokens, "most tokens per reply")->check(CLI::PositiveNumber);
  cmd->add_option("--temperature,-t", o->temperature, "sampling temperature; 0 = greedy")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", o->top_p, "nucleus sampling mass")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", o->seed, "random seed (default: random)");
  cmd->callback([o] { run_chat(*o); });
}

}  // namespace qlora::cli
