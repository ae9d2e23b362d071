// RoPE inverse frequencies for a config, with HF's rope_scaling applied ("llama3", "linear").
// Mirrors transformers' _compute_llama3_parameters. Tested through tests/golden/ (a Llama-3
// rope-scaled fixture) and tests/unit/test_config.cpp.
#pragma once
#include <vector>

#include "model/config.h"

namespace qlora {

// (D/2) values: theta^(-2i/D), then scaled.
std::vector<float> rope_inverse_frequencies(const LlamaConfig& config);

}  // namespace qlora
