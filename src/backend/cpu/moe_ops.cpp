// Mixture-of-experts kernels on the CPU. See moe_ops.h. Rows are few (N * k) and independent, so
// plain loops, parallel over rows where each row writes only its own output.
#include "backend/cpu/moe_ops.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace qlora::cpu {

namespace {
constexpr int64_t kParallelMinElems = 32768;  // as block_ops.cpp: below this, one thread
}

template <typename T>
void moe_route_forward(const T* logits, int64_t N, int64_t E, int64_t k, bool renormalize, T* probs, int32_t* idx,
                       T* weights) {
#pragma omp parallel for if (N * E > kParallelMinElems) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const T* l = logits + n * E;
    T* p = probs + n * E;
    T top = l[0];
    for (int64_t e = 1; e < E; ++e) top = std::max(top, l[e]);
    T sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += p[e] = std::exp(l[e] - top);
    for (int64_t e = 0; e < E; ++e) p[e] /= sum;
    // The k largest, most probable first; a tie goes to the lower expert index.
    std::vector<int32_t> order(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) order[size_t(e)] = int32_t(e);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [p](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    T chosen = 0;
    for (int64_t j = 0; j < k; ++j) chosen += p[order[size_t(j)]];
    if (!renormalize) chosen = 1;
    for (int64_t j = 0; j < k; ++j) {
      idx[n * k + j] = order[size_t(j)];
      weights[n * k + j] = p[order[size_t(j)]] / chosen;
    }
  }
}

// w_j = p_j / S with S = sum of the chosen p: dL/dp_j = (dw_j - sum_i dw_i w_i) / S for chosen j
// (0 otherwise), plus dprobs; then softmax: dlogit_e = p_e (dp_e - sum_f dp_f p_f).
template <typename T>
void moe_route_backward(const T* probs, const int32_t* idx, const T* weights, const T* dweights, const T* dprobs,
                        int64_t N, int64_t E, int64_t k, bool renormalize, T* dlogits) {
#pragma omp parallel for if (N * E > kParallelMinElems) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const T* p = probs + n * E;
    const int32_t* id = idx + n * k;
    const T* w = weights + n * k;
    const T* dw = dweights + n * k;
    T* dl = dlogits + n * E;
    std::vector<T> dp(static_cast<size_t>(E), T(0));
    if (dprobs)
      for (int64_t e = 0; e < E; ++e) dp[size_t(e)] = dprobs[n * E + e];
    T chosen = 0, dw_w = 0;
    for (int64_t j = 0; j < k; ++j) chosen += p[id[j]], dw_w += dw[j] * w[j];
    if (!renormalize) chosen = 1, dw_w = 0;  // w_j = p_j
    for (int64_t j = 0; j < k; ++j) dp[size_t(id[j])] += (dw[j] - dw_w) / chosen;
    T dot = 0;
    for (int64_t e = 0; e < E; ++e) dot += dp[size_t(e)] * p[e];
    for (int64_t e = 0; e < E; ++e) dl[e] = p[e] * (dp[size_t(e)] - dot);
  }
}

template <typename T>
void gather_rows(const T* src, const int32_t* rows, const T* scale, int64_t n, int64_t C, T* dst) {
#pragma omp parallel for if (n * C > kParallelMinElems) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T* s = src + int64_t(rows[i]) * C;
    T* d = dst + i * C;
    const T f = scale ? scale[i] : T(1);
    for (int64_t c = 0; c < C; ++c) d[c] = scale ? s[c] * f : s[c];
  }
}

// Serial: several i may add into one destination row.
template <typename T>
void scatter_add_rows(const T* src, const int32_t* rows, const T* scale, int64_t n, int64_t C, T* dst) {
  for (int64_t i = 0; i < n; ++i) {
    const T* s = src + i * C;
    T* d = dst + int64_t(rows[i]) * C;
    const T f = scale ? scale[i] : T(1);
    for (int64_t c = 0; c < C; ++c) d[c] += scale ? f * s[c] : s[c];
  }
}

template <typename T>
void gathered_row_dots(const T* a, const int32_t* rows, const T* b, int64_t n, int64_t C, T* out) {
#pragma omp parallel for if (n * C > kParallelMinElems) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T* x = a + int64_t(rows[i]) * C;
    const T* y = b + i * C;
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += double(x[c]) * double(y[c]);
    out[i] = T(s);
  }
}

#define QLORA_MOE_OPS_INSTANTIATE(T)                                                                              \
  template void moe_route_forward<T>(const T*, int64_t, int64_t, int64_t, bool, T*, int32_t*, T*);                      \
  template void moe_route_backward<T>(const T*, const int32_t*, const T*, const T*, const T*, int64_t, int64_t,   \
                                      int64_t, bool, T*);                                                               \
  template void gather_rows<T>(const T*, const int32_t*, const T*, int64_t, int64_t, T*);                        \
  template void scatter_add_rows<T>(const T*, const int32_t*, const T*, int64_t, int64_t, T*);                   \
  template void gathered_row_dots<T>(const T*, const int32_t*, const T*, int64_t, int64_t, T*);
QLORA_MOE_OPS_INSTANTIATE(float)
QLORA_MOE_OPS_INSTANTIATE(double)
#undef QLORA_MOE_OPS_INSTANTIATE

}  // namespace qlora::cpu
