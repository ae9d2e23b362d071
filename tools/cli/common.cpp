// Shared model-loading options for the CLI.
#include "common.h"

#include <set>

#include "backend/cpu/threads.h"
#include "core/error.h"
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

void add_tokenizer_option(CLI::App& cmd, std::string& tokenizer_path) {
  cmd.add_option("--tokenizer", tokenizer_path, "tokenizer file (default: beside or inside the model)");
}

std::unique_ptr<Tokenizer> load_model_tokenizer(const std::string& model_path, const std::string& tokenizer_path) {
  return tokenizer_path.empty() ? find_tokenizer_for_model(model_path) : load_tokenizer(tokenizer_path);
}

LlamaModel load_for_inference(const ModelOptions& options) {
  set_num_threads(options.threads);
  const DType dtype = dtype_from_name(options.dtype);
  LoadOptions load;
  load.weight_dtype = dtype;
  ForwardOptions forward;
  forward.compute = dtype;
  if (!options.quant.empty()) {
    forward.quantize.enabled = true;
    forward.quantize.type = quant_type_from_name(options.quant);
    forward.quantize.block_size = options.quant_block_size;
    forward.quantize.double_quant = options.quant_double;
  }
  return LlamaModel(load_model(options.model_path, load), forward);
}

size_t weight_memory_bytes(const LlamaWeights& weights) {
  std::set<const void*> seen;
  size_t total = 0;
  auto add = [&](const Tensor& t) {
    if (t.defined() && seen.insert(t.raw()).second) total += t.nbytes();
  };
  add(weights.embed_tokens);
  add(weights.norm);
  add(weights.lm_head);
  for (const auto& l : weights.layers) {
    for (const Tensor* t : {&l.input_layernorm, &l.q_proj, &l.k_proj, &l.v_proj, &l.q_bias, &l.k_bias, &l.v_bias,
                            &l.o_proj, &l.post_attention_layernorm, &l.gate_proj, &l.up_proj, &l.down_proj})
      add(*t);
  }
  return total;
}

}  // namespace qlora::cli
