// `qlora train CONFIG.yaml [--key value ...] [--dry-run] [--resume [CHECKPOINT]] [--quiet]`:
// fine-tunes a model as the YAML says (see examples/*.yaml and train_config.h for the keys); any
// key can be overridden on the command line (`--lora_r 16`, `--datasets.0.path FILE`).
#include "commands.h"
#include "core/error.h"
#include "train_config.h"
#include "train_run.h"

namespace qlora::cli {

namespace {

struct TrainCommand {
  std::string config_path;
  TrainRunOptions run;
};

// "--key value" / "--key=value" pairs from the arguments CLI11 did not recognise.
std::vector<std::pair<std::string, std::string>> parse_overrides(const std::vector<std::string>& args) {
  std::vector<std::pair<std::string, std::string>> out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0) fail("train", "unexpected argument '{}'; overrides are --key value", a);
    const size_t eq = a.find('=');
    if (eq != std::string::npos) {
      out.emplace_back(a.substr(2, eq - 2), a.substr(eq + 1));
    } else {
      if (i + 1 >= args.size()) fail("train", "override {} has no value", a);
      out.emplace_back(a.substr(2), args[++i]);
    }
  }
  return out;
}

}  // namespace

void register_train(CLI::App& app) {
  auto cmd_options = std::make_shared<TrainCommand>();
  CLI::App* cmd = app.add_subcommand("train", "Fine-tune a model (full, LoRA or QLoRA) from a YAML config");
  cmd->allow_extras();
  cmd->add_option("config", cmd_options->config_path, "YAML config (see examples/); keys may also come as --key value");
  cmd->add_flag("--dry-run", cmd_options->run.dry_run, "print the resolved config and the memory estimate, then exit");
  cmd->add_option("--resume", cmd_options->run.resume,
                  "continue from a checkpoint folder (no value: the newest in output_dir)")
      ->expected(0, 1)
      ->default_str("latest");
  cmd->add_flag("--quiet", cmd_options->run.quiet, "no progress line");
  cmd->add_flag("--distributed", cmd_options->run.distributed,
                "one rank of an MPI job (mpirun -np N qlora train CONFIG --distributed): each step's micro-batches "
                "are split over the ranks; rank 0 writes the outputs");
  cmd->add_flag("--ignore-memory-check", cmd_options->run.ignore_memory_check,
                "run even when the memory estimate exceeds the available memory or memory_budget");
  cmd->callback([cmd, cmd_options] {
    TrainCommand o = *cmd_options;
    if (cmd->count("--resume") && o.run.resume.empty()) o.run.resume = "latest";
    const TrainRunConfig config = load_train_config(o.config_path, parse_overrides(cmd->remaining()));
    run_training(config, o.run);
  });
}

}  // namespace qlora::cli
