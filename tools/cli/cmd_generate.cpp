// `qlora generate MODEL [--adapter DIR] [--tokenizer FILE] --prompt TEXT [--chat [--system TEXT]
//  [--template NAME] [--chat-template-kwargs JSON]] [--max-tokens N] [--temperature T] [--top-p P]
//  [--seed S]`: streams a continuation of the prompt, reusing a KV cache. An empty prompt starts
// from BOS. With --chat the prompt becomes a user turn rendered by the chat template and only the
// reply is printed. The tokenizer is found beside or inside the model when not given. Tested in tests/e2e/test_cli*.cpp.
#include <fmt/core.h>

#include <chrono>
#include <random>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "data/tokenizer.h"
#include "model/sampler.h"

namespace qlora::cli {

namespace {

struct GenerateOptions {
  ModelOptions model;
  std::string tokenizer_path;
  std::string prompt;
  bool chat = false;
  std::string system;
  std::string template_name = "auto";
  std::string template_kwargs;  // JSON object
  int64_t max_tokens = 256;
  float temperature = 0.8f;
  float top_p = 0.95f;
  int64_t seed = -1;
  bool no_bos = false;
  bool parse_special = false;
  bool ignore_eos = false;
  bool stats = false;
};

void run_generate(const GenerateOptions& o) {
  // The tokenizer first: a tokenizer too large for the model fails before the weights load.
  const auto tokenizer = load_model_tokenizer(o.model.model_path, o.tokenizer_path);
  const LlamaModel model = load_for_inference(o.model);
  std::vector<int32_t> ids;
  if (o.chat) {
    ChatTemplate chat_template = load_chat_template(o.model.model_path, *tokenizer, o.template_name);
    chat_template.set_kwargs(parse_template_kwargs(o.template_kwargs));
    std::vector<ChatMessage> messages;
    if (!o.system.empty()) messages.push_back({"system", o.system});
    messages.push_back({"user", o.prompt});
    ids = encode_chat(*tokenizer, chat_template, messages, o.parse_special);
  } else {
    // BOS only for models that expect it (Llama 2 yes; GPT-2-style SmolLM2/Qwen2 no). The prompt
    // is text: a "</s>" in it is not EOS unless --parse-special.
    ids = tokenizer->encode(o.prompt, !o.no_bos && tokenizer->adds_bos(), o.parse_special);
  }
  if (ids.empty()) {
    if (tokenizer->bos_id() < 0) fail("generate", "empty prompt and the tokenizer has no BOS token to start from");
    ids.push_back(tokenizer->bos_id());
  }
  const int64_t context = model.config().max_position_embeddings;
  if (int64_t(ids.size()) >= context)
    fail("generate", "prompt of {} tokens fills the model's context of {}", ids.size(), context);
  const uint64_t seed = o.seed >= 0 ? uint64_t(o.seed) : std::random_device{}();
  Sampler sampler({o.temperature, o.top_p, seed});

  KvCache cache(model.config(), context);
  const auto start = std::chrono::steady_clock::now();
  Tensor logits = model.forward(cache, ids.data(), int64_t(ids.size()), false);
  const auto prefill_done = std::chrono::steady_clock::now();
  if (!o.chat) fmt::print("{}", tokenizer->decode(ids, /*skip_special=*/true));
  std::fflush(stdout);
  int32_t prev = ids.back();
  int64_t generated = 0;
  while (generated < o.max_tokens && cache.size() < context) {
    const int32_t next = sampler.sample(logits.data<float>(), model.config().vocab_size);
    if (!o.ignore_eos && tokenizer->is_eog(next)) break;
    fmt::print("{}", tokenizer->decode_token(next, prev));
    std::fflush(stdout);
    ++generated;
    prev = next;
    if (cache.size() >= context) break;
    logits = model.forward(cache, &next, 1, false);
  }
  fmt::print("\n");
  if (o.stats) {
    const auto end = std::chrono::steady_clock::now();
    const double prefill = std::chrono::duration<double>(prefill_done - start).count();
    const double decode = std::chrono::duration<double>(end - prefill_done).count();
    fmt::print(stderr, "prompt {} tokens in {:.3f}s ({:.1f} tok/s); generated {} tokens in {:.3f}s ({:.1f} tok/s); seed {}\n",
               ids.size(), prefill, double(ids.size()) / prefill, generated, decode,
               generated ? double(generated) / decode : 0.0, seed);
  }
}

}  // namespace

void register_generate(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt");
  add_model_options(*cmd, o->model);
  add_adapter_option(*cmd, o->model);
  add_tokenizer_option(*cmd, o->tokenizer_path);
  cmd->add_option("--prompt,-p", o->prompt, "prompt text (empty: start from BOS)");
  cmd->add_flag("--chat", o->chat, "render the prompt as a user turn with the chat template; print only the reply");
  cmd->add_option("--system", o->system, "system message (with --chat)");
  cmd->add_option("--template", o->template_name, "chat template: auto (the model's), a built-in name or a .jinja file");
  cmd->add_option("--chat-template-kwargs", o->template_kwargs,
                  "template variables as a JSON object, e.g. '{\"enable_thinking\": false}' (Qwen3)");
  cmd->add_option("--max-tokens,-n", o->max_tokens, "tokens to generate")->check(CLI::NonNegativeNumber);
  cmd->add_option("--temperature,-t", o->temperature, "sampling temperature; 0 = greedy")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", o->top_p, "nucleus sampling mass")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", o->seed, "random seed (default: random, printed with --stats)");
  cmd->add_flag("--no-bos", o->no_bos, "do not prepend BOS");
  cmd->add_flag("--parse-special", o->parse_special,
                "special tokens written in the prompt (\"<s>\", \"<|im_end|>\") become control tokens; default: text");
  cmd->add_flag("--ignore-eos", o->ignore_eos, "keep generating past end-of-sequence");
  cmd->add_flag("--stats", o->stats, "print timing and seed to stderr");
  cmd->callback([o] { run_generate(*o); });
}

}  // namespace qlora::cli
