// Causal grouped-query attention on the CPU for inference with a KV cache.
// q (n, H*D) for positions [p0, p0+n); keys/values (p0+n, Hkv*D) hold every position so far.
// Query head h reads kv head h / (H / Hkv). out (n, H*D). Scale 1/sqrt(D), softmax in f32.
// window > 0 (Mistral's sliding window): the query at position p sees keys [p - window + 1, p].
// Tested in tests/unit/test_cpu_kernels.cpp against a plain-loop reference.
#pragma once
#include <cstdint>

namespace qlora::cpu {

void attention_causal(const float* q, const float* keys, const float* values, float* out, int64_t n, int64_t p0,
                      int64_t n_heads, int64_t n_kv_heads, int64_t D, int64_t window = 0);

}  // namespace qlora::cpu
