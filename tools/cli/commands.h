// Subcommand registration: each cmd_<name>.cpp adds its subcommand to the app.
#pragma once
#include <CLI/CLI.hpp>

namespace qlora::cli {

void register_info(CLI::App& app);
void register_generate(CLI::App& app);
void register_perplexity(CLI::App& app);
void register_tokenize(CLI::App& app);
void register_quantize(CLI::App& app);
void register_train(CLI::App& app);
void register_eval(CLI::App& app);
void register_chat(CLI::App& app);
void register_merge(CLI::App& app);
void register_export(CLI::App& app);
void register_estimate(CLI::App& app);
void register_system(CLI::App& app);

}  // namespace qlora::cli
