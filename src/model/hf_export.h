// Writing a (merged) model back out:
//   - export_hf_folder: a Hugging Face folder transformers loads: config.json (the source's own
//     config.json when it came from one, else LlamaConfig::to_hf_json; torch_dtype set to the
//     written dtype), model.safetensors (HF names, f32/bf16/f16; lm_head omitted when tied; norms
//     and biases in the same dtype, as save_pretrained does), generation_config.json, and the
//     tokenizer: copied from an HF source, or built from a GGUF's tokenizer.ggml.* vocabulary
//     (model/tokenizer_export.h). With quantize_nf4 the decoder linears are written as
//     bitsandbytes 4-bit (quant/bnb_format.h) plus a quantization_config, after merging in f32.
//     The weights are streamed tensor by tensor from a ModelSource (one source tensor and its
//     written copy in memory at a time); the safetensors data is in the source's tensor order.
//   - export_gguf: one GGUF v3 file llama.cpp loads (model/gguf_export.cpp).
// Tested in tests/unit/test_merge_export.cpp and tests/e2e/test_peft_roundtrip.cpp.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/gguf.h"
#include "model/model_source.h"
#include "model/weights.h"

namespace qlora {

// Called as work proceeds: (done, total, what).
using ExportProgress = std::function<void(int64_t done, int64_t total, const std::string& what)>;

struct HfExportOptions {
  DType dtype = DType::F32;  // F32 | BF16 | F16
  bool quantize_nf4 = false;
  int64_t nf4_block_size = 64;
  bool nf4_double_quant = true;  // QLoRA's setting (bnb_4bit_use_double_quant)
  ExportProgress progress;
};

// Writes the folder (created if needed; files replaced atomically one by one). Returns notes for
// the user (e.g. "no tokenizer written: ..."), empty when all went as expected.
// Streams the model: one source tensor and its converted (or quantized) copy at a time.
std::vector<std::string> export_hf_folder(const ModelSource& model, const std::string& out_dir,
                                          const HfExportOptions& options = {});
std::vector<std::string> export_hf_folder(const LlamaModelFile& model, const std::string& out_dir,
                                          const HfExportOptions& options = {});

struct GgufExportOptions {
  GgmlType type = GgmlType::F16;  // for matrices: F32 | F16 | BF16 | Q8_0 (1-D tensors stay F32)
  ExportProgress progress;
};

// Writes one GGUF file (general.architecture "llama", or "qwen2" for Qwen2) with llama.cpp's
// tensor names and q/k rows permuted to its interleaved RoPE order (llama only). The tokenizer
// metadata is copied from a GGUF source or built from an HF source's tokenizer.json when it is
// byte-level BPE. Returns notes as export_hf_folder.
std::vector<std::string> export_gguf(const ModelSource& model, const std::string& path,
                                     const GgufExportOptions& options = {});
std::vector<std::string> export_gguf(const LlamaModelFile& model, const std::string& path,
                                     const GgufExportOptions& options = {});

// The inverse of the loader's unpermute_rope_rows: rows h*D + 2*i + j of the result are rows
// h*D + j*(D/2) + i of `w` (HF rotate_half order -> llama.cpp's adjacent-pair order).
Tensor permute_rope_rows(const Tensor& w, int64_t n_heads);

}  // namespace qlora
