// Causal grouped-query attention, flash-attention style, for training and for decoding with a KV
// cache (one kernel for both): the forward keeps only the output and the log-sum-exp of each query
// row; the backward recomputes the probabilities from q, k and lse, so no (T, T) matrix is stored
// between the passes.
// Layout: q (B, T, H, D), k and v (B, Tk, Hkv, D), out (B, T, H, D), lse (B, H, T) (the forward
// accepts lse = null: inference). Query head h reads kv head h / (H / Hkv). Scale 1/sqrt(D).
// Softmax and lse in T's precision (f32 for float). Query t sits at position q_offset + t and sees
// key s <= q_offset + t (KV cache: q_offset cached positions, Tk = q_offset + T).
// segment_ids (B, T) may be null (plain causal); when given (training: Tk = T, q_offset = 0),
// query t attends key s only if segment_ids[t] == segment_ids[s] >= 0 (packed examples never see
// each other; padding, segment -1, attends nothing and gets out = 0 and zero gradients).
// window > 0: additionally (q_offset + t) - s < window (Mistral's sliding window).
// Tested in tests/grad/test_op_grads.cpp (finite differences) and tests/unit/test_train_ops.cpp
// (against a plain-loop reference with an explicit mask, and cached decoding against one pass).
#pragma once
#include <cstdint>

#include "backend/backend.h"

namespace qlora::cpu {

template <typename T>
void attention_forward(const T* q, const T* k, const T* v, const int32_t* segment_ids, T* out, T* lse,
                       const AttentionShape& shape);
// dq (B, T, H, D), dk and dv (B, T, Hkv, D) are written (overwritten). Training only: Tk = T and
// q_offset = 0.
template <typename T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* out, const T* lse,
                        const int32_t* segment_ids, T* dq, T* dk, T* dv, const AttentionShape& shape);

}  // namespace qlora::cpu
