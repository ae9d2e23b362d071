// Loading a Llama-family model from any supported source into LlamaModelFile (all of it, dense):
//   - a Hugging Face folder (config.json + model.safetensors or model.safetensors.index.json),
//   - a GGUF file (v1-v3; F32/F16/BF16/Q8_0/Q4_0/Q4_1 tensors, dequantized on load),
//   - a llama2.c checkpoint (.bin, v0 "legacy" layout).
// Weights end up in HF orientation: GGUF "llama" and llama2.c q/k rows (adjacent-pair RoPE) are
// permuted back to HF's rotate_half order. Tested in tests/unit/test_loader.cpp and tests/golden/.
#pragma once
#include <string>

#include "core/dtype.h"
#include "model/weights.h"

namespace qlora {

struct LoadOptions {
  // dtype the weights are held in after loading (f32 or bf16); matrices are converted,
  // norms and biases stay f32.
  DType weight_dtype = DType::F32;
};

class ModelSource;

// Detects the format from the path (directory, *.gguf, *.bin) and loads every tensor. Every error
// names the file and, where one is involved, the tensor. For a model too large to hold dense,
// open a ModelSource (model/model_source.h) and stream from it instead.
LlamaModelFile load_model(const std::string& path, const LoadOptions& options = {});
// The same from an opened source.
LlamaModelFile materialize(const ModelSource& source, const LoadOptions& options = {});

}  // namespace qlora
