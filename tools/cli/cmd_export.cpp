// `qlora export MODEL --adapter DIR --format peft|gguf -o OUT [--type f16|bf16|q8_0|f32]`:
//   peft: writes the adapter (a PEFT folder or a training checkpoint-<N> folder) as a normalised
//         PEFT folder (adapter_config.json + adapter_model.safetensors) that peft loads on MODEL;
//   gguf: merges the adapter into MODEL (f32, tensor by tensor as it is written) and writes one
//         GGUF file for llama.cpp.
// Tested in tests/e2e/test_peft_roundtrip.cpp.
#include <fmt/core.h>

#include "commands.h"
#include "core/error.h"
#include "io/peft_adapter.h"
#include "model/hf_export.h"
#include "model/model_source.h"
#include "model/merge.h"
#include "progress.h"
#include "train/adapter_export.h"

namespace qlora::cli {
namespace {

struct ExportCliOptions {
  std::string model_path;
  std::string adapter;
  std::string format;
  std::string out;
  std::string type = "f16";
  double lora_alpha = 0;
};

GgmlType ggml_type_from(const std::string& s) {
  if (s == "f32") return GgmlType::F32;
  if (s == "f16") return GgmlType::F16;
  if (s == "bf16") return GgmlType::BF16;
  return GgmlType::Q8_0;
}

void run_export(const ExportCliOptions& o) {
  PeftAdapter adapter = read_adapter_source(o.adapter, o.lora_alpha);
  if (o.format == "peft") {
    // Check it fits the model before writing something peft would refuse (config only).
    adapter_modules(adapter, ModelSource::open(o.model_path).config());
    if (adapter.config.base_model_name_or_path.empty()) adapter.config.base_model_name_or_path = o.model_path;
    write_peft_adapter(o.out, adapter);
    fmt::print("wrote PEFT adapter {} (r {}, lora_alpha {}, {} tensors) -> {}\n", o.adapter, adapter.config.r,
               adapter.config.lora_alpha, adapter.tensors.size(), o.out);
    return;
  }
  // Streamed: each projection is merged as it is written, never the whole model in f32.
  const ModelSource model = merged_source(ModelSource::open(o.model_path), adapter);
  GgufExportOptions ex;
  ex.type = ggml_type_from(o.type);
  ProgressBar bar("write", model.config().num_hidden_layers);
  ex.progress = [&bar](int64_t done, int64_t, const std::string& what) { bar.update(done, what); };
  const std::vector<std::string> notes = export_gguf(model, o.out, ex);
  bar.finish();
  for (const std::string& n : notes) fmt::print(stderr, "note: {}\n", n);
  fmt::print("merged {} + {} -> {} (GGUF, {})\n", o.model_path, o.adapter, o.out, o.type);
}

}  // namespace

void register_export(CLI::App& app) {
  auto o = std::make_shared<ExportCliOptions>();
  CLI::App* cmd = app.add_subcommand("export", "Export an adapter as a PEFT folder, or the merged model as GGUF");
  cmd->add_option("model", o->model_path, "base model: HF folder, .gguf or llama2.c .bin")->required();
  cmd->add_option("--adapter", o->adapter, "PEFT adapter folder or training checkpoint-<N> folder")->required();
  cmd->add_option("--format", o->format, "peft | gguf")->required()->check(CLI::IsMember({"peft", "gguf"}));
  cmd->add_option("-o,--output", o->out, "output folder (peft) or file (gguf)")->required();
  cmd->add_option("--type", o->type, "GGUF tensor type for matrices")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0"}));
  cmd->add_option("--lora-alpha", o->lora_alpha, "lora_alpha for a checkpoint folder that does not record it");
  cmd->callback([o] { run_export(*o); });
}

}  // namespace qlora::cli
