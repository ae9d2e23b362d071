// `qlora estimate (MODEL | --preset NAME | --params N) --method full|lora|qlora [--precision P]
//   [--seq N] [--batch B] [--checkpointing] [--optimizer adamw|adamw8bit|paged] [--rank R]
//   [--textbook] [--ranks N] [--json]`: the memory a training run needs, by category
//   (train/memory_estimate.h). With --ranks (data parallel) the figures are per rank: every rank
//   holds a full replica, and the global batch is N times the micro-batch.
// A model is opened, not loaded: its config and tensor index say its shape and how its weights are
// stored (which sets the width of frozen tensors and the load transient). Tested in tests/e2e/test_estimate_cli.cpp.
#include <fmt/core.h>

#include <filesystem>

#include "commands.h"
#include "core/error.h"
#include "model/model_source.h"
#include "train/memory_estimate.h"

namespace qlora::cli {

namespace {

struct EstimateArgs {
  std::string model, preset, params, dtype;
  std::string targets;  // comma-separated
  bool json = false;
  int ranks = 1;  // data parallel: the figures are per rank (each holds a full replica)
  EstimateOptions options;
};

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const std::string part = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!part.empty()) out.push_back(part);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

void run_estimate(EstimateArgs& a) {
  const int sources = int(!a.model.empty()) + int(!a.preset.empty()) + int(!a.params.empty());
  if (sources != 1) fail("estimate", "give exactly one of MODEL, --preset or --params; got {}", sources);
  EstimateOptions& o = a.options;
  if (!a.targets.empty()) o.target_modules = split_commas(a.targets);
  if (!a.dtype.empty()) o.compute = a.dtype;

  MemoryEstimate m;
  std::string source, note;
  if (!a.params.empty()) {
    if (!o.textbook)
      fail("estimate", "--params gives no model shape, so it needs --textbook (or use --preset / MODEL)");
    m = estimate_memory_textbook(parse_parameter_count(a.params), o);
    source = a.params + " parameters";
  } else if (!a.preset.empty()) {
    const LlamaConfig config = preset_config(a.preset);
    o.n_experts = preset_experts(a.preset);
    o.experts_per_token = preset_experts_per_token(a.preset);
    source = "preset " + a.preset;
    if (o.textbook && o.method == "full") {
      // The tutorials multiply the size in the name (7B = 7e9), not the exact count.
      const int64_t nominal = preset_nominal_parameters(a.preset);
      m = estimate_memory_textbook(nominal, o);
      note = fmt::format("textbook: {} taken as {} parameters (exact count {})\n", a.preset, nominal,
                         count_parameters(config, o.n_experts));
    } else {
      m = estimate_memory(config, o);
    }
  } else {
    if (!std::filesystem::exists(a.model)) fail("estimate", "MODEL {} does not exist", a.model);
    // The config and the tensor index only: no weights are read.
    const ModelSource model = ModelSource::open(a.model);
    o.source_file_bytes = int64_t(source_weight_bytes(a.model));
    o.source_dtype = estimate_source_dtype(model.stored_types());
    m = estimate_memory(model.config(), o);
    source = fmt::format("{} ({})", a.model, model.stored_types());
  }

  if (a.ranks < 1) fail("estimate", "--ranks must be >= 1; got {}", a.ranks);
  if (a.json) {
    nlohmann::json j = m.to_json();
    j["source"] = source;
    j["method"] = o.method;
    j["ranks"] = a.ranks;
    j["per_rank"] = true;  // data parallel replicates the model: these bytes on every rank
    fmt::print("{}\n", j.dump(2));
    return;
  }
  fmt::print("memory estimate: {}, method {}{}{}, seq {}, batch {}, optimizer {}{}\n", source, o.method,
             o.precision.empty() ? "" : ", precision ", o.precision, o.seq, o.batch, o.optimizer,
             o.checkpointing ? ", checkpointing" : "");
  fmt::print("{}{}", note, m.table());
  if (a.ranks > 1)
    fmt::print("data parallel over {} ranks: every rank needs the memory above (a full replica: base, adapter, "
               "optimizer state); the global batch is {} x micro-batch {} x the accumulation steps\n",
               a.ranks, a.ranks, o.batch);
}

}  // namespace

void register_estimate(CLI::App& app) {
  auto a = std::make_shared<EstimateArgs>();
  CLI::App* cmd = app.add_subcommand("estimate", "Estimate the memory a fine-tuning run needs");
  cmd->add_option("model", a->model, "model: Hugging Face folder, GGUF or llama2.c file (no weights are read)");
  cmd->add_option("--source-dtype", a->options.source_dtype,
                  "how the weights are stored, for presets: bf16 | f16 | f32 | quantized (GGUF) | bnb-4bit")
      ->capture_default_str();
  cmd->add_option("--preset", a->preset, "llama-7b | llama-13b | mistral-7b | llama3-8b | mixtral-8x7b | qwen3-8b | qwen3-30b-a3b");
  cmd->add_option("--params", a->params, "a bare parameter count (e.g. 10B), with --textbook");
  cmd->add_option("--method", a->options.method, "full | lora | qlora")->capture_default_str();
  cmd->add_option("--precision", a->options.precision,
                  "base weight precision: fp32 | bf16 | fp16 | int8 | nf4 | fp4 (default: fp32, nf4 for qlora)");
  cmd->add_option("--seq", a->options.seq, "sequence length")->capture_default_str();
  cmd->add_option("--batch", a->options.batch, "micro-batch size")->capture_default_str();
  cmd->add_flag("--checkpointing", a->options.checkpointing, "gradient checkpointing (recompute every block)");
  cmd->add_option("--optimizer", a->options.optimizer, "adamw | adamw8bit | paged")->capture_default_str();
  cmd->add_option("--rank", a->options.lora_r, "LoRA rank")->capture_default_str();
  cmd->add_option("--target-modules", a->targets, "comma-separated LoRA targets (default: all 7 projections)");
  cmd->add_option("--block-size", a->options.quant_block_size, "4-bit block size")->capture_default_str();
  cmd->add_flag("!--no-double-quant", a->options.double_quant, "f32 absmax constants instead of 8-bit");
  cmd->add_option("--dtype", a->dtype, "compute dtype: f32 | bf16");
  cmd->add_flag("--textbook", a->options.textbook, "classic per-parameter arithmetic only (no activations)");
  cmd->add_flag("--json", a->json, "print byte counts as a JSON object");
  cmd->add_option("--ranks", a->ranks, "data-parallel ranks: the estimate is per rank (each holds a full replica)")
      ->capture_default_str();
  cmd->callback([a] { run_estimate(*a); });
}

}  // namespace qlora::cli
