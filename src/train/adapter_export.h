// Between a TrainModel's LoRA adapters and PEFT adapter folders: export the trained adapter
// (peft_adapter_from_model, then write_peft_adapter) and load one back to continue training or to
// evaluate it (load_adapter_into_model). Tested in tests/unit/test_peft_adapter.cpp and
// tests/e2e/test_peft_roundtrip.cpp (our adapter loaded by peft gives the same logits).
#pragma once
#include <string>

#include "io/peft_adapter.h"
#include "train/train_model.h"

namespace qlora {

// The model's LoRA A/B (f32 copies, PEFT key order as parameters() lists them) with the config
// from model.options().lora. Throws Error for a full fine-tuning model (no adapters).
// (TrainModel::parameters() is non-const, hence the non-const reference.)
PeftAdapter peft_adapter_from_model(TrainModel& model, const std::string& base_model_name_or_path = "");

// Copies the adapter's A/B into the model's adapters. The adapter must match the model exactly:
// same r, lora_alpha, use_rslora and target modules as model.options().lora, and every key/shape
// of the model's parameters; anything else throws Error naming the key.
void load_adapter_into_model(TrainModel& model, const PeftAdapter& adapter);

// An adapter from either a PEFT folder (adapter_config.json + adapter_model.safetensors) or a
// trainer checkpoint folder (checkpoint-<N>: model.safetensors with PEFT-named LoRA params +
// trainer_state.json). For a checkpoint, r and target_modules come from the tensors, and
// lora_alpha / use_rslora / dropout from an adapter_config.json in the folder or its parent, else
// from trainer_state.json's "lora" object when it has one, else from `lora_alpha` (> 0); without
// any of them it throws Error asking for --lora-alpha.
PeftAdapter read_adapter_source(const std::string& dir, double lora_alpha = 0);

// The adapter's settings as a LoraConfig (for building a TrainModel that matches an adapter).
LoraConfig lora_config_from_adapter(const PeftAdapterConfig& config);

}  // namespace qlora
