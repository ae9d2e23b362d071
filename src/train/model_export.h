// The weights a full fine-tuning run produced, as a LlamaModelFile that model/hf_export.h can write
// (and LlamaModel can run): every trained parameter taken from TrainModel::parameters() by its HF
// name, in f32. Tested in tests/e2e/test_cli_train.cpp (the written folder loads and differs from
// the base only where training changed it).
#pragma once
#include "model/weights.h"
#include "train/train_model.h"

namespace qlora {

// `source` supplies what training does not change (config, path and format, so the exporter can
// copy the tokenizer). Throws Error for a model that was not fully fine-tuned.
LlamaModelFile model_file_from_params(TrainModel& model, const LlamaModelFile& source_meta);

}  // namespace qlora
