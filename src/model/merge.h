// Merging a PEFT LoRA adapter into dense weights: W ← W + scale·B·A for every adapted linear
// (projection, MoE router or expert),
// through the one merge of lora/lora_linear.h (merged_weight): the delta is formed in f64 and added
// to the widened base before a single rounding to f32 (then to the weight's dtype), so the result
// does not depend on the BLAS kernel's summation order. A 4-bit source is dequantized on load, and
// merging happens before any re-quantization so the base is not rounded twice.
// merged_source() is the streaming form: a ModelSource that merges each projection as it is
// loaded, so merge and export hold one source tensor and its merged f32 copy at a time.
// Tested in tests/unit/test_merge_export.cpp (merged forward == unmerged TrainModel forward;
// streaming == eager) and tests/e2e/test_peft_roundtrip.cpp (against peft's merge_and_unload).
#pragma once
#include <map>
#include <string>
#include <utility>

#include "io/peft_adapter.h"
#include "model/config.h"
#include "model/model_source.h"
#include "model/weights.h"

namespace qlora {

// The adapter's modules checked against the config, without touching any weight: every key a
// LoRA A/B of a linear module that layer has (model/weights.h find_layer_module), each module with both A (r, in) and
// B (out, r) fitting its (out, in). HF weight name ("model.layers.0.self_attn.q_proj.weight") ->
// (A, B). Throws Error naming the adapter key otherwise.
std::map<std::string, std::pair<Tensor, Tensor>> adapter_modules(const PeftAdapter& adapter, const LlamaConfig& config);

void merge_adapter(LlamaWeights& weights, const LlamaConfig& config, const PeftAdapter& adapter);

// `base` with `adapter` merged into each adapted projection when it is loaded (f32); every other
// tensor is the base's. Released tensors release the base's. The adapter is checked up front.
ModelSource merged_source(const ModelSource& base, const PeftAdapter& adapter);

}  // namespace qlora
