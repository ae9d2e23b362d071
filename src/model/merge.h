// Merging a PEFT LoRA adapter into dense weights: W ← W + scale·B·A for every adapted projection,
// through the one merge of lora/lora_linear.h (merged_weight): the delta is formed in f64 and added
// to the widened base before a single rounding to f32 (then to the weight's dtype), so the result
// does not depend on the BLAS kernel's summation order. A 4-bit source is already dequantized by
// load_model, and merging happens before any re-quantization so the base is not rounded twice. Tested in tests/unit/test_merge_export.cpp
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
