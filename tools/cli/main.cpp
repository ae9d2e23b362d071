// The `qlora` command line: parses the subcommand and turns library errors into a message on
// stderr and a non-zero exit.
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <exception>

#include "commands.h"
#include "backend/cpu/threads.h"
#include "core/error.h"

int main(int argc, char** argv) {
  qlora::prefer_passive_omp_wait(argv);  // before any OpenMP region; see backend/cpu/threads.h
  // A file over the size limit (ulimit -f) then fails its write with EFBIG, which the writers report
  // naming the file, instead of killing the process with a half-written temp file left behind.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"qlora.cpp: fine-tune Llama-family models with QLoRA on the hardware you have"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "qlora 0.1.0");
  qlora::cli::register_info(app);
  qlora::cli::register_generate(app);
  qlora::cli::register_perplexity(app);
  qlora::cli::register_tokenize(app);
  qlora::cli::register_quantize(app);
  qlora::cli::register_train(app);
  qlora::cli::register_eval(app);
  qlora::cli::register_chat(app);
  qlora::cli::register_merge(app);
  qlora::cli::register_export(app);
  qlora::cli::register_estimate(app);
  qlora::cli::register_system(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const qlora::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
