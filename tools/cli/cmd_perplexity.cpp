// `qlora perplexity MODEL [--adapter DIR] --data FILE [--ctx N] [--json]`: perplexity of a text file, scored in
// windows of --ctx tokens.
#include <fmt/core.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "data/tokenizer.h"
#include "model/perplexity.h"
#include "progress.h"

namespace qlora::cli {

namespace {

struct PerplexityOptions {
  ModelOptions model;
  std::string tokenizer_path;
  std::string data_path;
  int64_t context = 0;
  int64_t max_tokens = 0;
  bool json = false;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("perplexity", "cannot read data file {}", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void run_perplexity(const PerplexityOptions& o) {
  const std::string text = read_text(o.data_path);
  const LlamaModel model = load_for_inference(o.model);
  const auto tokenizer = load_model_tokenizer(o.model.model_path, o.tokenizer_path);
  std::vector<int32_t> tokens = tokenizer->encode(text, tokenizer->adds_bos());
  if (o.max_tokens > 0 && int64_t(tokens.size()) > o.max_tokens) tokens.resize(size_t(o.max_tokens));
  const int64_t context = o.context > 0 ? o.context : std::min<int64_t>(512, model.config().max_position_embeddings);
  if (context > model.config().max_position_embeddings)
    fail("perplexity", "--ctx {} exceeds the model's context of {}", context, model.config().max_position_embeddings);
  ProgressBar bar("perplexity", (int64_t(tokens.size()) + context - 1) / context);
  const PerplexityResult r = evaluate_perplexity(model, tokens, context, [&](int64_t done, int64_t total) {
    if (!o.json) bar.update(done, "");
  });
  if (!o.json) bar.finish();
  if (o.json) {
    nlohmann::json j = {{"model", o.model.model_path}, {"data", o.data_path},        {"context", context},
                        {"tokens", r.tokens_scored},    {"windows", r.windows},       {"mean_nll", r.mean_nll},
                        {"perplexity", r.perplexity},   {"dtype", o.model.dtype},
                        {"quant", o.model.quant.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.model.quant)},
                        {"block_size", o.model.quant_block_size},
                        {"double_quant", o.model.quant_double}};
    fmt::print("{}\n", j.dump(2));
  } else {
    fmt::print("perplexity {:.4f} (mean NLL {:.4f}) over {} tokens in {} windows of {}\n", r.perplexity, r.mean_nll,
               r.tokens_scored, r.windows, context);
  }
}

}  // namespace

void register_perplexity(CLI::App& app) {
  auto o = std::make_shared<PerplexityOptions>();
  CLI::App* cmd = app.add_subcommand("perplexity", "Perplexity of a model on a text file");
  add_model_options(*cmd, o->model);
  add_adapter_option(*cmd, o->model);
  add_tokenizer_option(*cmd, o->tokenizer_path);
  cmd->add_option("--data", o->data_path, "text file to score")->required();
  cmd->add_option("--ctx", o->context, "window length in tokens (default: min(512, model context))");
  cmd->add_option("--max-tokens", o->max_tokens, "score at most this many tokens (0 = all)");
  cmd->add_flag("--json", o->json, "print a JSON object");
  cmd->callback([o] { run_perplexity(*o); });
}

}  // namespace qlora::cli
