// Perplexity of a token stream: split into windows of `context` tokens (non-overlapping, each
// starting fresh as llama.cpp's perplexity does without a stride), score every token after the
// first of each window, ppl = exp(mean NLL). Tested in tests/unit/test_sampler.cpp
// (token_nll), tests/quant/test_quantized_model.cpp and tests/e2e/test_cli.cpp.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "model/llama.h"

namespace qlora {

struct PerplexityResult {
  double mean_nll = 0.0;
  double perplexity = 0.0;
  int64_t tokens_scored = 0;
  int64_t windows = 0;
};

// progress(done_windows, total_windows) is called after each window when given.
PerplexityResult evaluate_perplexity(const LlamaModel& model, const std::vector<int32_t>& tokens, int64_t context,
                                     const std::function<void(int64_t, int64_t)>& progress = {});

// -log softmax(logits)[target], computed stably in double.
double token_nll(const float* logits, int64_t V, int32_t target);

}  // namespace qlora
