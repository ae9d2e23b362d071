// How a LlamaModel is set up: the method (full fine-tuning, LoRA over a dense base, QLoRA over a
// frozen 4-bit base), the LoRA and quantization settings, the compute dtype, gradient
// checkpointing, the backend it runs on, and whether it trains at all (an inference model holds no
// trainable parameters and takes adapters from PEFT files). Tested through tests/unit/test_train_model.cpp.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "backend/backend.h"
#include "core/quant_tensor.h"
#include "lora/lora_config.h"
#include "quant/double_quant.h"

namespace qlora {

enum class TrainMethod { Full, Lora, Qlora };
TrainMethod train_method_from_name(const std::string& name);  // "full" | "lora" | "qlora"; throws Error
std::string train_method_name(TrainMethod method);

// 4-bit storage of the decoder's linear weights (q/k/v/o/gate/up/down) as QLoRA keeps its frozen
// base: quantized once at construction, the dense copies released, every product computed by the
// fused dequant-matmul. Embeddings, norms and the LM head stay dense.
struct QuantizeOptions {
  bool enabled = false;  // inference models only; a qlora ModelOptions quantizes regardless
  QuantType type = QuantType::NF4;
  int64_t block_size = 64;
  bool double_quant = true;
  // Which bitsandbytes build's codes to reproduce where a value sits on a code boundary: its CUDA
  // kernels (what a GPU-quantized checkpoint holds) or its CPU lookup table (quant/double_quant.h).
  BnbRounding rounding = BnbRounding::Cuda;
};

// How an MoE layer runs its experts: Grouped, each expert's GEMMs once over all the rows routed to
// it (the engine's way), or PerToken, one GEMM per (token, expert) pair on a single row, the naive
// dispatch that bench/moe_vs_dense.sh measures grouping against. PerToken takes no LoRA on the
// experts (a LoRA backward needs the forward's saved rows of the whole group).
enum class MoeDispatch { Grouped, PerToken };

struct ModelOptions {
  TrainMethod method = TrainMethod::Qlora;
  LoraConfig lora;             // lora and qlora
  QuantizeOptions quantize;    // qlora's base: type, block size, double quantization
  DType compute = DType::F32;  // F32 | BF16 | F64 (gradient checks)
  int64_t checkpoint_every = 0;  // 0: keep every block's activations; k >= 1: recompute blocks l % k == 0
  // No trainable parameters: inference and evaluation (the base is 4-bit when `quantize.enabled`).
  bool frozen = false;
  MoeDispatch moe_dispatch = MoeDispatch::Grouped;
  std::shared_ptr<Backend> backend;  // null: a CPU backend
};

// Inference: compute dtype and optional 4-bit base (frozen ModelOptions).
struct ForwardOptions {
  DType compute = DType::F32;  // f32 or bf16 activations
  QuantizeOptions quantize;
  std::shared_ptr<Backend> backend;  // null: a CPU backend
};

ModelOptions inference_options(const ForwardOptions& forward);

}  // namespace qlora
