// `qlora merge MODEL --adapter DIR -o OUT [--dtype f32|bf16|f16] [--quantize nf4]`: merges a PEFT
// LoRA adapter (or a training checkpoint-<N> folder) into the model, W + scale·B·A in f32, and
// writes a Hugging Face folder (config.json, model.safetensors, tokenizer, generation config).
// --quantize nf4 writes the merged decoder linears as bitsandbytes 4-bit (quantized once, after
// the f32 merge). The model streams through: one source tensor and its merged and written copies
// in memory at a time. Tested in tests/e2e/test_peft_roundtrip.cpp.
#include <fmt/core.h>

#include "commands.h"
#include "core/error.h"
#include "model/hf_export.h"
#include "model/model_source.h"
#include "model/merge.h"
#include "progress.h"
#include "train/adapter_export.h"

namespace qlora::cli {
namespace {

struct MergeCliOptions {
  std::string model_path;
  std::string adapter;
  std::string out;
  std::string dtype = "f32";
  std::string quantize;
  double lora_alpha = 0;
};

void run_merge(const MergeCliOptions& o) {
  HfExportOptions ex;
  ex.dtype = o.dtype == "bf16" ? DType::BF16 : o.dtype == "f16" ? DType::F16 : DType::F32;
  ex.quantize_nf4 = o.quantize == "nf4";
  const PeftAdapter adapter = read_adapter_source(o.adapter, o.lora_alpha);
  fmt::print(stderr, "adapter {}: r {}, lora_alpha {}, {} tensors, targets {}\n", o.adapter, adapter.config.r,
             adapter.config.lora_alpha, adapter.tensors.size(), adapter.config.target_modules.size());
  // Streamed: each projection is merged as it is written, never the whole model in f32.
  const ModelSource model = merged_source(ModelSource::open(o.model_path), adapter);
  ProgressBar bar("write", model.config().num_hidden_layers);
  ex.progress = [&bar](int64_t done, int64_t, const std::string& what) { bar.update(done, what); };
  const std::vector<std::string> notes = export_hf_folder(model, o.out, ex);
  bar.finish();
  for (const std::string& n : notes) fmt::print(stderr, "note: {}\n", n);
  fmt::print("merged {} + {} -> {} ({}{})\n", o.model_path, o.adapter, o.out, o.dtype,
             ex.quantize_nf4 ? ", decoder linears nf4" : "");
}

}  // namespace

void register_merge(CLI::App& app) {
  auto o = std::make_shared<MergeCliOptions>();
  CLI::App* cmd = app.add_subcommand("merge", "Merge a LoRA adapter into a model and write a Hugging Face folder");
  cmd->add_option("model", o->model_path, "base model: HF folder, .gguf or llama2.c .bin")->required();
  cmd->add_option("--adapter", o->adapter, "PEFT adapter folder or training checkpoint-<N> folder")->required();
  cmd->add_option("-o,--output", o->out, "output folder")->required();
  cmd->add_option("--dtype", o->dtype, "dtype of the written weights")->check(CLI::IsMember({"f32", "bf16", "f16"}));
  cmd->add_option("--quantize", o->quantize, "re-quantize the merged decoder linears (bitsandbytes 4-bit)")
      ->check(CLI::IsMember({"nf4"}));
  cmd->add_option("--lora-alpha", o->lora_alpha, "lora_alpha for a checkpoint folder that does not record it");
  cmd->callback([o] { run_merge(*o); });
}

}  // namespace qlora::cli
