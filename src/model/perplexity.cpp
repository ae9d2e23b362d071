// Windowed perplexity over a token stream.
#include "model/perplexity.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace qlora {

double token_nll(const float* logits, int64_t V, int32_t target) {
  float max_logit = logits[0];
  for (int64_t i = 1; i < V; ++i) max_logit = std::max(max_logit, logits[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(double(logits[i]) - max_logit);
  return std::log(sum) + max_logit - double(logits[target]);
}

PerplexityResult evaluate_perplexity(const LlamaModel& model, const std::vector<int32_t>& tokens, int64_t context,
                                     const std::function<void(int64_t, int64_t)>& progress) {
  if (context < 2) fail("perplexity", "context must be at least 2 tokens, got {}", context);
  if (tokens.size() < 2) fail("perplexity", "need at least 2 tokens to score, got {}", tokens.size());
  const int64_t V = model.config().vocab_size;
  const int64_t n = int64_t(tokens.size());
  const int64_t windows = (n + context - 1) / context;  // a window's first token is context only
  PerplexityResult result;
  double total = 0.0;
  KvCache cache(model.config(), context);
  for (int64_t w = 0; w < windows; ++w) {
    const int64_t begin = w * context;
    const int64_t len = std::min(context, n - begin);
    if (len < 2) break;
    cache.clear();
    Tensor logits = model.forward(cache, tokens.data() + begin, len, true);  // (len, V)
    for (int64_t t = 0; t + 1 < len; ++t) {
      const int32_t target = tokens[size_t(begin + t + 1)];
      if (target < 0 || target >= V) fail("perplexity", "token id {} out of range; expected [0, {})", target, V);
      total += token_nll(logits.data<float>() + t * V, V, target);
      ++result.tokens_scored;
    }
    ++result.windows;
    if (progress) progress(w + 1, windows);
  }
  result.mean_nll = total / double(result.tokens_scored);
  result.perplexity = std::exp(result.mean_nll);
  return result;
}

}  // namespace qlora
