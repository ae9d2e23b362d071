// Options shared by the subcommands that load a model (threads, compute dtype) and helpers to
// load a model with them.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "data/tokenizer.h"
#include "model/llama.h"
#include "model/loader.h"

namespace qlora::cli {

struct ModelOptions {
  std::string model_path;
  std::string dtype = "f32";  // compute and weight dtype: f32 | bf16
  int threads = 0;            // 0 = all cores
  std::string quant;          // "" | nf4 | fp4 | int4: hold decoder linears in 4 bits
  int64_t quant_block_size = 64;
  bool quant_double = false;
};

// Adds MODEL, --dtype, --threads and the --quant options to a subcommand.
void add_model_options(CLI::App& cmd, ModelOptions& options);
// Adds --tokenizer FILE (default: the model's own, found beside or inside it).
void add_tokenizer_option(CLI::App& cmd, std::string& tokenizer_path);
// The tokenizer named by --tokenizer, else the one that belongs to the model.
std::unique_ptr<Tokenizer> load_model_tokenizer(const std::string& model_path, const std::string& tokenizer_path);
// Sets the thread count and loads the model for inference.
LlamaModel load_for_inference(const ModelOptions& options);
// Bytes of weight memory the loaded model holds (a tied head counted once).
size_t weight_memory_bytes(const LlamaWeights& weights);

}  // namespace qlora::cli
