// Causal grouped-query attention for training (no KV cache), flash-attention style: the forward
// keeps only the output and the log-sum-exp of each query row; the backward recomputes the
// probabilities from q, k and lse, so no (T, T) matrix is stored between the passes.
// Layout: q (B, T, H, D), k and v (B, T, Hkv, D), out (B, T, H, D), lse (B, H, T).
// Query head h reads kv head h / (H / Hkv). Scale 1/sqrt(D). Softmax and lse in T's precision
// (f32 for float). segment_ids (B, T) may be null (plain causal); when given, query t attends key
// s only if s <= t and segment_ids[t] == segment_ids[s] >= 0 (packed examples never see each
// other; padding, segment -1, attends nothing and gets out = 0 and zero gradients).
// window > 0: additionally t - s < window (Mistral's sliding window).
// Tested in tests/grad/test_op_grads.cpp (finite differences) and tests/unit/test_train_ops.cpp
// (against cpu::attention_causal and a plain-loop reference with an explicit mask).
#pragma once
#include <cstdint>

namespace qlora::cpu {

struct AttentionShape {
  int64_t B = 1, T = 1, H = 1, Hkv = 1, D = 1;
  int64_t window = 0;
};

template <typename T>
void attention_forward(const T* q, const T* k, const T* v, const int32_t* segment_ids, T* out, T* lse,
                       const AttentionShape& shape);
// dq (B, T, H, D), dk and dv (B, T, Hkv, D) are written (overwritten).
template <typename T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* out, const T* lse,
                        const int32_t* segment_ids, T* dq, T* dk, T* dv, const AttentionShape& shape);

}  // namespace qlora::cpu
