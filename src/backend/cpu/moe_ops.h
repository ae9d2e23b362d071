// Mixture-of-experts kernels on the CPU (Backend's moe_route_*, gather_rows, scatter_add_rows,
// gathered_row_dots; see backend/backend.h), for T = float and double. Tested through the
// whole-model tests of the mixtral and qwen3-moe fixtures (logits vs transformers, f64 finite
// differences, training parity).
#pragma once
#include <cstdint>

namespace qlora::cpu {

template <typename T>
void moe_route_forward(const T* logits, int64_t N, int64_t E, int64_t k, bool renormalize, T* probs, int32_t* idx,
                       T* weights);
template <typename T>
void moe_route_backward(const T* probs, const int32_t* idx, const T* weights, const T* dweights, const T* dprobs,
                        int64_t N, int64_t E, int64_t k, bool renormalize, T* dlogits);
template <typename T>
void gather_rows(const T* src, const int32_t* rows, const T* scale, int64_t n, int64_t C, T* dst);
template <typename T>
void scatter_add_rows(const T* src, const int32_t* rows, const T* scale, int64_t n, int64_t C, T* dst);
template <typename T>
void gathered_row_dots(const T* a, const int32_t* rows, const T* b, int64_t n, int64_t C, T* out);

}  // namespace qlora::cpu
