// Memory estimator for training: predicts, before anything is loaded, the bytes a full / LoRA /
// QLoRA run of a Llama-family model needs — weights, gradients, optimizer state, adapters,
// quantization constants, activations and the process baseline — from the config alone, following
// what LlamaModel (model/llama_blocks.cpp), build_model_weights and the optimizers really allocate.
// A `textbook` mode keeps only the classic per-parameter arithmetic (7B full fp32 = 28 + 28 + 56 =
// 112 GB), so the figures of the usual tutorials come out exactly. The memory model, its
// assumptions and a measured-vs-predicted table are in docs/memory.md.
// Tested in tests/unit/test_memory_estimate.cpp (the classic figures, and the per-category bytes
// against TrainModel::memory() and Optimizer::state_bytes() of real runs) and
// tests/e2e/test_estimate_cli.cpp (`qlora estimate`).
#pragma once
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/projections.h"
#include "model/config.h"

namespace qlora {

struct EstimateOptions {
  std::string method = "qlora";  // full | lora | qlora
  // Storage precision of the base weights: fp32 | bf16 (fp16 is an alias: same bytes) | int8 | nf4 | fp4.
  // "" = the method's default: full -> fp32, lora -> fp32, qlora -> nf4.
  std::string precision = "";
  int64_t seq = 512, batch = 1;
  bool checkpointing = false;     // recompute every block in the backward (checkpoint_every = 1)
  std::string optimizer = "adamw";  // adamw | adamw8bit | paged (AdamW f32 state in a paged, spilled store)
  int64_t lora_r = 8;
  std::vector<std::string> target_modules = all_projection_names();
  // Classic per-parameter arithmetic only: no activations, overhead or load transient; see
  // textbook_bytes_per_param() for the per-precision table.
  bool textbook = false;
  int64_t quant_block_size = 64;  // NF4/FP4 block (bitsandbytes' default)
  bool double_quant = true;       // 8-bit absmax with an f32 constant per 256 blocks
  std::string compute = "f32";    // f32 | bf16 (bf16 also follows from precision bf16)
  // Mixture of experts (Mixtral): LlamaConfig has no expert fields, so they travel here.
  // The MLP is counted n_experts times (weights, adapters) and experts_per_token times (activations).
  int64_t n_experts = 1, experts_per_token = 1;
  // How the weights are stored: the dense width of a safetensors/GGUF checkpoint (bf16 | f16 |
  // f32), GGUF block types (quantized: dequantized to f32 tensor by tensor), or a bitsandbytes
  // 4-bit folder (bnb-4bit: QLoRA takes its projections as stored). It sets the width of frozen
  // matrices (a bf16 source stays bf16) and the load transient. The hub serves bf16.
  std::string source_dtype = "bf16";
  // Bytes of the weight files (for `quantized`: their average width). -1 = unknown.
  int64_t source_file_bytes = -1;
};

struct MemoryEstimate {
  size_t weights = 0;          // base weights as stored (4-bit codes for QLoRA; + f32 masters for full bf16)
  size_t gradients = 0;        // gradient buffers of the trainable parameters
  size_t optimizer = 0;        // optimizer state resident in RAM
  size_t adapters = 0;         // LoRA A and B (f32 masters)
  size_t quant_constants = 0;  // absmax constants of the 4-bit base (double-quantized or f32)
  size_t activations = 0;      // activations alive at the step's peak (saved + backward working set)
  size_t activations_engine = 0;  // TrainModel's MemoryStats::activations_peak (an upper bound; not in total)
  size_t overhead = 0;         // process baseline: binary, BLAS/OpenMP buffers, allocator slack
  size_t load_peak = 0;        // while loading: the built model + the largest one-tensor transient
  size_t optimizer_spilled = 0;  // paged optimizer: state kept in the spill file, not in RAM
  size_t total = 0;            // textbook: the sum; else max(training sum, load_peak + overhead)
  int64_t parameters = 0;      // model parameters counted
  int64_t trainable_parameters = 0;
  bool textbook = false;

  size_t training_sum() const {
    return weights + gradients + optimizer + adapters + quant_constants + activations + overhead;
  }
  nlohmann::json to_json() const;  // byte counts under the field names above
  std::string table() const;       // one row per category: GB (1e9 bytes, 2 decimals) and bytes
};

MemoryEstimate estimate_memory(const LlamaConfig& config, const EstimateOptions& options);
// Textbook arithmetic for a bare parameter count (e.g. "a 10B model"); options.textbook must be set
// and the method must be full (LoRA needs the model's shape).
MemoryEstimate estimate_memory_textbook(int64_t parameters, const EstimateOptions& options);

// Bytes per parameter of the classic arithmetic for full fine-tuning with Adam, by precision:
// fp32: 4 + 4 + 8 (m, v in fp32) = 16; bf16/fp16: 2 + 2 + 12 (fp32 master, m, v) = 16;
// int8: 1 + 1 + 2 (m, v in 8 bits) = 4.
struct TextbookBytes {
  double weights, gradients, optimizer;
};
TextbookBytes textbook_bytes_per_param(const std::string& precision);

// Preset configs (Hugging Face config.json values): llama-7b, llama-13b, mistral-7b, llama3-8b,
// mixtral-8x7b, qwen3-8b, qwen3-30b-a3b. Throws Error naming the preset and listing the known ones.
LlamaConfig preset_config(const std::string& name);
std::vector<std::string> preset_names();
int64_t preset_experts(const std::string& name);            // 8 for mixtral-8x7b, 128 for qwen3-30b-a3b, else 1
int64_t preset_experts_per_token(const std::string& name);  // 2 for mixtral-8x7b, 8 for qwen3-30b-a3b, else 1
// The size the preset's name states (7e9 for llama-7b, 56e9 for mixtral-8x7b): what the textbook
// arithmetic multiplies.
int64_t preset_nominal_parameters(const std::string& name);

// Parameters of a config, counting a tied LM head once; n_experts copies of the MLP plus the
// router (C x n_experts per layer) when n_experts > 1.
int64_t count_parameters(const LlamaConfig& config, int64_t n_experts = 1);

// "7B", "7e9", "1.5b", "135M", "7000000000" -> a parameter count; throws Error on anything else.
int64_t parse_parameter_count(const std::string& text);

// Bytes of a 4-bit (bits = 4) or 8-bit tensor of n values quantized block-wise: the codes, plus one
// constant per block (8 bits when double-quantized, with one f32 per nested block of 256 and an f32
// offset; else f32). Returned as {codes, constants}.
struct QuantBytes {
  size_t codes = 0, constants = 0;
};
QuantBytes quantized_bytes(int64_t n, int bits, int64_t block_size, bool double_quant, int64_t nested_block = 256,
                           bool offset = true);

// Process baseline (bytes) the estimate adds for a CPU run: calibrated by measurement, see docs/memory.md.
size_t process_overhead_bytes();

// Bytes of a model's weight files as the loader maps them: the file itself, or the *.safetensors
// of a folder (what EstimateOptions::source_file_bytes wants).
uint64_t source_weight_bytes(const std::string& path);
// EstimateOptions::source_dtype from ModelSource::stored_types() ("bf16+f32", "Q4_K+Q6_K+F32",
// "bnb-nf4+bf16"): its dominant (first) type.
std::string estimate_source_dtype(const std::string& stored_types);

}  // namespace qlora
