// Causal GQA attention: one (query, head) pair per work item; scores, softmax and the weighted
// sum of values in f32 with vectorisable inner loops.
#include "backend/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace qlora::cpu {

void attention_causal(const float* q, const float* keys, const float* values, float* out, int64_t n, int64_t p0,
                      int64_t n_heads, int64_t n_kv_heads, int64_t D, int64_t window) {
  const int64_t group = n_heads / n_kv_heads;
  const int64_t q_stride = n_heads * D, kv_stride = n_kv_heads * D;
  const float scale = 1.0f / std::sqrt(float(D));
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(p0 + n));
#pragma omp for collapse(2) schedule(dynamic, 4)
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t h = 0; h < n_heads; ++h) {
        const float* qv = q + i * q_stride + h * D;
        const int64_t kvh = h / group;
        const int64_t len = p0 + i + 1;  // causal: keys 0..p0+i
        const int64_t first = window > 0 ? std::max<int64_t>(0, len - window) : 0;
        float max_score = -INFINITY;
        for (int64_t s = first; s < len; ++s) {
          const float* kv = keys + s * kv_stride + kvh * D;
          float dot = 0.0f;
          for (int64_t d = 0; d < D; ++d) dot += qv[d] * kv[d];
          scores[size_t(s)] = dot * scale;
          max_score = std::max(max_score, scores[size_t(s)]);
        }
        float denom = 0.0f;
        for (int64_t s = first; s < len; ++s) {
          scores[size_t(s)] = std::exp(scores[size_t(s)] - max_score);
          denom += scores[size_t(s)];
        }
        float* o = out + i * q_stride + h * D;
        std::fill(o, o + D, 0.0f);
        const float inv = 1.0f / denom;
        for (int64_t s = first; s < len; ++s) {
          const float p = scores[size_t(s)] * inv;
          const float* vv = values + s * kv_stride + kvh * D;
          for (int64_t d = 0; d < D; ++d) o[d] += p * vv[d];
        }
      }
    }
  }
}

}  // namespace qlora::cpu
