// Options shared by the subcommands that load a model (threads, compute dtype, a LoRA adapter
// applied unmerged) and helpers to load a model with them, find its chat template and generate.
// Exercised by tests/e2e/test_cli*.cpp.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "data/tokenizer.h"
#include "io/peft_adapter.h"
#include "model/llama.h"
#include "model/loader.h"
#include "model/sampler.h"

namespace qlora::cli {

struct ModelOptions {
  std::string model_path;
  std::string dtype = "f32";  // compute and weight dtype: f32 | bf16
  int threads = 0;            // 0 = all cores
  std::string quant;          // "" | nf4 | fp4 | int4: hold decoder linears in 4 bits
  int64_t quant_block_size = 64;
  bool quant_double = false;
  std::string adapter_path;   // "" | a PEFT adapter folder, applied unmerged
};

// Adds MODEL, --dtype, --threads and the --quant options to a subcommand.
void add_model_options(CLI::App& cmd, ModelOptions& options);
// Adds --adapter DIR (a PEFT LoRA adapter folder: adapter_config.json + adapter_model.safetensors).
void add_adapter_option(CLI::App& cmd, ModelOptions& options);
// Adds --tokenizer FILE (default: the model's own, found beside or inside it).
void add_tokenizer_option(CLI::App& cmd, std::string& tokenizer_path);
// The tokenizer named by --tokenizer, else the one that belongs to the model.
std::unique_ptr<Tokenizer> load_model_tokenizer(const std::string& model_path, const std::string& tokenizer_path);
// Reads a PEFT adapter folder; an error names the path when it is not a folder.
PeftAdapter load_adapter(const std::string& dir);
// Sets the thread count and loads the model for inference, with its adapter when one is named.
LlamaModel load_for_inference(const ModelOptions& options);
// "auto": the model's own chat template (GGUF or tokenizer_config.json), else a built-in by name
// (alpaca, chatml, llama-2, llama-3, mistral), or a template file (a path ending in .jinja). With
// fallback set, "auto" falls back to that built-in when the model has no template.
ChatTemplate load_chat_template(const std::string& model_path, const Tokenizer& tokenizer, const std::string& name,
                                const std::string& fallback = "");
// `--chat-template-kwargs` text: a JSON object of template variables ({"enable_thinking": false});
// throws Error naming the flag when it is not one.
nlohmann::json parse_template_kwargs(const std::string& text);
// Ids of the messages rendered by the template with a generation prompt: the template's control
// tokens are parsed, message content is text unless parse_special_in_content
// (data/content_guard.h); BOS added only when the model wants one and the template did not write it.
std::vector<int32_t> encode_chat(const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                                 const std::vector<ChatMessage>& messages, bool parse_special_in_content = false);

// Samples up to max_tokens after `logits` (the last row of a forward over the prompt, already in
// `cache`), feeding each token back; stops at an end-of-generation token (not emitted, not
// cached) or when the context is full. on_text receives each token's text as it is decided.
// Returns the generated ids.
std::vector<int32_t> generate_tokens(const LlamaModel& model, const Tokenizer& tokenizer, KvCache& cache,
                                     Tensor logits, Sampler& sampler, int64_t max_tokens, int32_t prev,
                                     const std::function<void(const std::string&)>& on_text = {});
// Bytes of weight memory the loaded model holds (a tied head counted once).
size_t weight_memory_bytes(const ModelSource& source, DType weight_dtype);

}  // namespace qlora::cli
