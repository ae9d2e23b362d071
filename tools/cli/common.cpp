// Shared model-loading options for the CLI.
#include "common.h"

#include <set>

#include "backend/cpu/threads.h"
#include "core/error.h"

namespace qlora::cli {

void add_model_options(CLI::App& cmd, ModelOptions& options) {
  cmd.add_option("model", options.model_path, "model: HF folder, .gguf or llama2.c .bin")->required();
  cmd.add_option("--dtype", options.dtype, "weight and compute dtype")->check(CLI::IsMember({"f32", "bf16"}));
  cmd.add_option("--threads", options.threads, "CPU threads (0 = all cores)");
}

LlamaModel load_for_inference(const ModelOptions& options) {
  set_num_threads(options.threads);
  const DType dtype = dtype_from_name(options.dtype);
  LoadOptions load;
  load.weight_dtype = dtype;
  ForwardOptions forward;
  forward.compute = dtype;
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
