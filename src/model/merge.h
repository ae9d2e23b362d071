// Merging a PEFT LoRA adapter into dense weights: W ← W + scale·B·A for every adapted projection,
// computed in f32 whatever the weights' dtype (bf16 weights are widened, merged and rounded once;
// a 4-bit source is already dequantized by load_model, and merging happens before any
// re-quantization so the base is not rounded twice). Tested in tests/unit/test_merge_export.cpp
// (merged forward == unmerged TrainModel forward) and tests/e2e/test_peft_roundtrip.cpp (against
// peft's merge_and_unload).
#pragma once
#include "io/peft_adapter.h"
#include "model/config.h"
#include "model/weights.h"

namespace qlora {

// Throws Error (naming the adapter key) when a key names a layer or module the model does not
// have, or when A (r, in) / B (out, r) do not fit the weight (out, in).
void merge_adapter(LlamaWeights& weights, const LlamaConfig& config, const PeftAdapter& adapter);

}  // namespace qlora
