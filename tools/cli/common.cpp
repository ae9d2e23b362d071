// Shared model-loading options for the CLI.
#include "common.h"

#include <filesystem>
#include <fstream>

#include "backend/cpu/threads.h"
#include "core/error.h"
#include "io/peft_adapter.h"
#include "data/content_guard.h"
#include "model/model_source.h"
#include "quant/nf4.h"

namespace qlora::cli {

void add_model_options(CLI::App& cmd, ModelOptions& options) {
  cmd.add_option("model", options.model_path, "model: HF folder, .gguf or llama2.c .bin")->required();
  cmd.add_option("--dtype", options.dtype, "weight and compute dtype")->check(CLI::IsMember({"f32", "bf16"}));
  cmd.add_option("--threads", options.threads, "CPU threads (0 = all cores)");
  cmd.add_option("--quant", options.quant, "run with the decoder's linear weights quantized to 4 bits")
      ->check(CLI::IsMember({"nf4", "fp4", "int4"}));
  cmd.add_option("--block-size", options.quant_block_size, "4-bit block size (power of two, 32..4096)");
  cmd.add_flag("--double-quant", options.quant_double, "double-quantize the 4-bit block constants");
}

void add_adapter_option(CLI::App& cmd, ModelOptions& options) {
  cmd.add_option("--adapter", options.adapter_path,
                 "PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors), applied unmerged");
}

void add_tokenizer_option(CLI::App& cmd, std::string& tokenizer_path) {
  cmd.add_option("--tokenizer", tokenizer_path, "tokenizer file (default: beside or inside the model)");
}

std::unique_ptr<Tokenizer> load_model_tokenizer(const std::string& model_path, const std::string& tokenizer_path) {
  auto tokenizer = tokenizer_path.empty() ? find_tokenizer_for_model(model_path) : load_tokenizer(tokenizer_path);
  // Checked here, where every subcommand meets model and tokenizer, before any weight is read.
  check_tokenizer_fits(tokenizer->vocab_size(), tokenizer_path.empty() ? "of " + model_path : tokenizer_path,
                       ModelSource::open(model_path).config(), model_path);
  return tokenizer;
}

LlamaModel load_for_inference(const ModelOptions& options) {
  set_num_threads(options.threads);
  const DType dtype = dtype_from_name(options.dtype);
  ForwardOptions forward;
  forward.compute = dtype;
  if (!options.quant.empty()) {
    forward.quantize.enabled = true;
    forward.quantize.type = quant_type_from_name(options.quant);
    forward.quantize.block_size = options.quant_block_size;
    forward.quantize.double_quant = options.quant_double;
  }
  // Read the adapter first: a bad path fails before the (slow) model load.
  const PeftAdapter adapter = options.adapter_path.empty() ? PeftAdapter{} : load_adapter(options.adapter_path);
  LlamaModel model(ModelSource::open(options.model_path), forward);  // streamed in, tensor by tensor
  if (!options.adapter_path.empty()) model.set_adapter(adapter);
  return model;
}

PeftAdapter load_adapter(const std::string& dir) {
  if (!std::filesystem::is_directory(dir))
    fail("adapter", "{} is not a folder; --adapter expects a PEFT adapter folder holding adapter_config.json "
         "and adapter_model.safetensors", dir);
  return read_peft_adapter(dir);
}

ChatTemplate load_chat_template(const std::string& model_path, const Tokenizer& tokenizer, const std::string& name,
                                const std::string& fallback) {
  const std::string bos = tokenizer.bos_id() >= 0 ? tokenizer.token_text(tokenizer.bos_id()) : "";
  const std::string eos = tokenizer.eos_id() >= 0 ? tokenizer.token_text(tokenizer.eos_id()) : "";
  // A template file (TRL's prefix-preserving training variants, a fixed template): by path.
  if (name.ends_with(".jinja") || (name.find('/') != std::string::npos && std::filesystem::is_regular_file(name))) {
    std::ifstream in(name, std::ios::binary);
    if (!in) fail("template", "cannot read the chat template file {}", name);
    return ChatTemplate(name, std::string(std::istreambuf_iterator<char>(in), {}), bos, eos);
  }
  if (name != "auto" && !name.empty()) return ChatTemplate::builtin(name, bos, eos);
  try {
    return ChatTemplate::from_model(model_path, bos, eos);
  } catch (const Error&) {
    if (fallback.empty()) throw;
    return ChatTemplate::builtin(fallback, bos, eos);
  }
}

nlohmann::json parse_template_kwargs(const std::string& text) {
  if (text.empty()) return nlohmann::json::object();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("template", "--chat-template-kwargs '{}' is not JSON: {}", text, e.what());
  }
  if (!j.is_object())
    fail("template", "--chat-template-kwargs '{}' must be a JSON object, e.g. '{{\"enable_thinking\": false}}'", text);
  return j;
}

std::vector<int32_t> encode_chat(const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                                 const std::vector<ChatMessage>& messages, bool parse_special_in_content) {
  if (parse_special_in_content) return encode_guarded(tokenizer, {chat_template.render(messages, true), {}});
  return encode_guarded(tokenizer, render_guarded(chat_template, tokenizer, messages, true));
}

std::vector<int32_t> generate_tokens(const LlamaModel& model, const Tokenizer& tokenizer, KvCache& cache,
                                     Tensor logits, Sampler& sampler, int64_t max_tokens, int32_t prev,
                                     const std::function<void(const std::string&)>& on_text) {
  const int64_t V = model.config().vocab_size;
  std::vector<int32_t> out;
  while (int64_t(out.size()) < max_tokens) {
    const int32_t next = sampler.sample(logits.data<float>(), V);
    if (tokenizer.is_eog(next)) break;
    if (on_text) on_text(tokenizer.decode_token(next, prev));
    out.push_back(next);
    prev = next;
    if (cache.size() >= cache.capacity() || int64_t(out.size()) >= max_tokens) break;
    logits = model.forward(cache, &next, 1, false);
  }
  return out;
}

size_t weight_memory_bytes(const ModelSource& source, DType weight_dtype) {
  // What load_model would hold: matrices in the weight dtype, norms and biases f32, a tied head once.
  size_t total = 0;
  for (const std::string& name : source.tensor_names()) {
    const Shape shape = source.expected_shape(name);
    total += size_t(shape_numel(shape)) * (shape.size() == 2 ? dtype_size(weight_dtype) : sizeof(float));
  }
  return total;
}

}  // namespace qlora::cli
