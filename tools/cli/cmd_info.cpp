// `qlora info MODEL [--json]`: architecture, parameter count, dtypes and memory footprint.
#include <fmt/core.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "common.h"

namespace qlora::cli {

namespace {

uint64_t path_bytes(const std::string& path) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(path)) return fs::file_size(path);
  uint64_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(path))
    if (entry.is_regular_file()) total += entry.file_size();
  return total;
}

}  // namespace

void register_info(CLI::App& app) {
  auto options = std::make_shared<ModelOptions>();
  auto json_out = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("info", "Show a model's architecture, size, dtypes and memory footprint");
  add_model_options(*cmd, *options);
  cmd->add_flag("--json", *json_out, "print a JSON object");
  cmd->callback([options, json_out] {
    // The index and config only: no weight is read.
    const ModelSource source = ModelSource::open(options->model_path);
    const LlamaConfig& c = source.config();
    const size_t memory = weight_memory_bytes(source, dtype_from_name(options->dtype));
    const std::string file_dtype = source.stored_types();
    struct {
      std::string path, format;
    } file{source.path(), source.format()};
    nlohmann::json j = {{"path", file.path},
                        {"format", file.format},
                        {"architecture", c.architecture},
                        {"model_type", c.model_type},
                        {"parameters", c.parameter_count()},
                        {"file_dtype", file_dtype},
                        {"weight_dtype", options->dtype},
                        {"file_bytes", path_bytes(file.path)},
                        {"memory_bytes", memory},
                        {"config", c.to_hf_json()}};
    if (*json_out) {
      fmt::print("{}\n", j.dump(2));
      return;
    }
    fmt::print("model         {}\n", file.path);
    fmt::print("format        {} ({})\n", file.format, file_dtype);
    fmt::print("architecture  {} ({})\n", c.architecture, c.model_type);
    fmt::print("parameters    {} ({:.2f} M)\n", c.parameter_count(), double(c.parameter_count()) / 1e6);
    fmt::print("layers        {}   hidden {}   ffn {}   vocab {}\n", c.num_hidden_layers, c.hidden_size,
               c.intermediate_size, c.vocab_size);
    fmt::print("heads         {} query, {} key/value, head dim {}\n", c.num_attention_heads, c.num_key_value_heads,
               c.head_dim);
    fmt::print("rope          theta {}{}\n", c.rope_theta,
               c.rope_scaling.type.empty() ? "" : ", scaling " + c.rope_scaling.type);
    fmt::print("embeddings    {}\n", c.tie_word_embeddings ? "tied with the LM head" : "separate LM head");
    fmt::print("memory        {:.1f} MiB of weights as {} (file {:.1f} MiB)\n", double(memory) / (1 << 20),
               options->dtype, double(path_bytes(file.path)) / (1 << 20));
  });
}

}  // namespace qlora::cli
