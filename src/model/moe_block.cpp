// The mixture-of-experts MLP of a Mixtral or Qwen3-MoE block, forward and backward, as
// transformers' MixtralSparseMoeBlock and Qwen3MoeSparseMoeBlock compute it: router logits h2·Wgᵀ,
// softmax, the k most probable experts with their probabilities renormalised to sum to 1 (always
// in Mixtral, with norm_topk_prob in Qwen3-MoE), and x_out = x_mid + Σ_j w_j·expert_j(h2).
// Experts run grouped: the (token, expert) pairs are sorted by expert (slot-major within an
// expert, as transformers' torch.where orders them), each expert's rows gathered into one block,
// so an expert's three GEMMs run once per micro-batch over all its tokens. The backward goes
// through the expert products, the weighted sum, the renormalisation and the softmax (top-k
// selection has no gradient, as in torch), and adds the load-balancing loss's gradient on the
// probabilities when the config asks for it (output_router_logits). Tested in
// tests/golden/test_golden_logits.cpp, tests/grad/test_model_grads.cpp and
// tests/parity/test_train_parity.cpp (mixtral and qwen3-moe fixtures).
#include <type_traits>

#include "core/error.h"
#include "model/llama_engine.h"

namespace qlora {

double LlamaModel::Impl::AuxStats::loss() const {
  if (rows <= 0) return 0.0;
  double sum = 0;
  for (size_t e = 0; e < counts.size(); ++e) sum += (counts[e] / rows) * (prob_sums[e] / rows);
  return sum * double(counts.size());
}

template <typename T>
void LlamaModel::Impl::moe_forward(int64_t l, const Rows& rows, BlockActivations& a, Tensor& x_out, bool training,
                                   uint64_t seed) {
  Backend& be = *backend;
  ModelLayer& layer = w.layers[size_t(l)];
  const LlamaConfig& c = config;
  const int64_t N = rows.N(), C = c.hidden_size, F = c.moe_intermediate_size, E = c.num_local_experts;
  const int64_t k = c.num_experts_per_tok, Nk = N * k;
  const bool bf16 = std::is_same_v<T, float> && options.compute == DType::BF16;
  auto round = [&](Tensor& t, int64_t n) {
    if constexpr (std::is_same_v<T, float>)
      if (bf16) be.round_to_bf16(t.data<float>(), n);
  };
  // Router and routing.
  linear_forward<T>(be, layer.router, a.h2.data<T>(), a.router_logits.data<T>(), N, training,
                    moe_linear_seed(seed, l, 0), training ? &a.router_saved : nullptr);
  round(a.router_logits, N * E);
  be.moe_route_forward(a.router_logits.data<T>(), N, E, k, c.norm_topk_prob, a.probs.data<T>(),
                       a.topk_idx.data<int32_t>(), a.topk_w.data<T>());
  // Group the pairs by expert on the host (N*k ids), slot-major then token within an expert.
  std::vector<int32_t> idx(static_cast<size_t>(Nk));
  be.download(idx.data(), a.topk_idx);
  a.expert_begin.assign(size_t(E + 1), 0);
  for (int32_t e : idx) ++a.expert_begin[size_t(e) + 1];
  for (int64_t e = 0; e < E; ++e) a.expert_begin[size_t(e + 1)] += a.expert_begin[size_t(e)];
  std::vector<int64_t> fill(a.expert_begin.begin(), a.expert_begin.end() - 1);
  std::vector<int32_t> token(static_cast<size_t>(Nk)), slot(static_cast<size_t>(Nk));
  for (int64_t j = 0; j < k; ++j)
    for (int64_t t = 0; t < N; ++t) {
      const int64_t r = fill[size_t(idx[size_t(t * k + j)])]++;
      token[size_t(r)] = int32_t(t), slot[size_t(r)] = int32_t(t * k + j);
    }
  be.upload(a.moe_token, token.data());
  be.upload(a.moe_slot, slot.data());
  be.gather_rows(a.h2.data<T>(), a.moe_token.data<int32_t>(), static_cast<const T*>(nullptr), Nk, C, a.xs.data<T>());
  be.gather_rows(a.topk_w.data<T>(), a.moe_slot.data<int32_t>(), static_cast<const T*>(nullptr), Nk, 1,
                 a.moe_w.data<T>());
  // Each expert once over its rows (PerToken: once per row, the baseline grouping is measured against).
  const bool per_token = options.moe_dispatch == MoeDispatch::PerToken;
  auto expert = [&](int64_t e, int part, const T* in, int64_t in_w, T* out, int64_t out_w) {
    const int64_t begin = a.expert_begin[size_t(e)], n = a.expert_begin[size_t(e + 1)] - begin;
    if (n == 0) return;
    const Linear& lin = layer.experts[size_t(e)][size_t(part)];
    LinearSaved* saved = training ? &a.expert_saved[size_t(e * 3 + part)] : nullptr;
    if (per_token) {
      for (int64_t r = begin; r < begin + n; ++r)
        linear_forward<T>(be, lin, in + r * in_w, out + r * out_w, 1, training, 0, saved);
      return;
    }
    linear_forward<T>(be, lin, in + begin * in_w, out + begin * out_w, n, training,
                      moe_linear_seed(seed, l, 1 + e * 3 + part), saved);
  };
  for (int64_t e = 0; e < E; ++e) {
    expert(e, 0, a.xs.data<T>(), C, a.gate.data<T>(), F);
    expert(e, 1, a.xs.data<T>(), C, a.up.data<T>(), F);
  }
  round(a.gate, Nk * F), round(a.up, Nk * F);
  be.swiglu_forward(a.gate.data<T>(), a.up.data<T>(), a.act.data<T>(), Nk * F);
  round(a.act, Nk * F);
  for (int64_t e = 0; e < E; ++e) expert(e, 2, a.act.data<T>(), F, a.ys.data<T>(), C);
  round(a.ys, Nk * C);
  be.copy(x_out.raw(), a.x_mid.raw(), size_t(N * C) * sizeof(T));
  be.scatter_add_rows(a.ys.data<T>(), a.moe_token.data<int32_t>(), a.moe_w.data<T>(), Nk, C, x_out.data<T>());
}

template <typename T>
void LlamaModel::Impl::moe_backward(int64_t l, const Rows& rows, BlockActivations& a, BlockGradients& g, const T* dx) {
  Backend& be = *backend;
  ModelLayer& layer = w.layers[size_t(l)];
  const LlamaConfig& c = config;
  const int64_t N = rows.N(), C = c.hidden_size, F = c.moe_intermediate_size, E = c.num_local_experts;
  const int64_t k = c.num_experts_per_tok, Nk = N * k;
  auto zero = [&](Tensor& t) { be.memset(t.raw(), 0, t.nbytes()); };
  const int32_t* token = a.moe_token.data<int32_t>();
  // Through the weighted sum: each pair's output gradient and its weight's gradient.
  be.gather_rows(dx, token, a.moe_w.data<T>(), Nk, C, g.dys.data<T>());
  be.gathered_row_dots(dx, token, a.ys.data<T>(), Nk, C, g.dpair_w.data<T>());
  const bool per_token = options.moe_dispatch == MoeDispatch::PerToken;
  auto expert_back = [&](int64_t e, int part, const T* in, int64_t in_w, const T* dout, int64_t out_w, T* din) {
    const int64_t begin = a.expert_begin[size_t(e)], n = a.expert_begin[size_t(e + 1)] - begin;
    if (n == 0) return;
    Linear& lin = layer.experts[size_t(e)][size_t(part)];
    const LinearSaved& saved = a.expert_saved[size_t(e * 3 + part)];
    if (per_token) {
      for (int64_t r = begin; r < begin + n; ++r)
        linear_backward<T>(be, lin, in + r * in_w, dout + r * out_w, din + r * in_w, saved, 1);
      return;
    }
    linear_backward<T>(be, lin, in + begin * in_w, dout + begin * out_w, din + begin * in_w, saved, n);
  };
  zero(g.d_act);
  for (int64_t e = 0; e < E; ++e) expert_back(e, 2, a.act.data<T>(), F, g.dys.data<T>(), C, g.d_act.data<T>());
  be.swiglu_backward(g.d_act.data<T>(), a.gate.data<T>(), a.up.data<T>(), g.dgate.data<T>(), g.dup.data<T>(), Nk * F);
  zero(g.dxs);
  for (int64_t e = 0; e < E; ++e) {
    expert_back(e, 0, a.xs.data<T>(), C, g.dgate.data<T>(), F, g.dxs.data<T>());
    expert_back(e, 1, a.xs.data<T>(), C, g.dup.data<T>(), F, g.dxs.data<T>());
  }
  zero(g.dh);
  be.scatter_add_rows(g.dxs.data<T>(), token, static_cast<const T*>(nullptr), Nk, C, g.dh.data<T>());
  // Through the routing: the pairs' weight gradients back to (token, slot) order, then the
  // renormalisation and softmax, with the load-balancing loss's gradient on the probabilities:
  // aux = E Σ_e (count_e / R)(Σ_valid rows p_e / R), counts held fixed (top-k has no gradient).
  zero(g.dtopk_w);
  be.scatter_add_rows(g.dpair_w.data<T>(), a.moe_slot.data<int32_t>(), static_cast<const T*>(nullptr), Nk, 1,
                      g.dtopk_w.data<T>());
  const T* dprobs = nullptr;
  if (aux.grad_weight != 0 && aux.rows > 0) {
    std::vector<T> host(static_cast<size_t>(N * E), T(0));
    std::vector<int32_t> segments(static_cast<size_t>(N));
    be.download(segments.data(), ws.segments);
    for (int64_t t = 0; t < N; ++t) {
      if (segments[size_t(t)] < 0) continue;  // padding: transformers masks it out of the aux loss
      for (int64_t e = 0; e < E; ++e)
        host[size_t(t * E + e)] = T(aux.grad_weight * double(E) * aux.counts[size_t(e)] / (aux.rows * aux.rows));
    }
    be.upload(g.dprobs, host.data());
    dprobs = g.dprobs.data<T>();
  }
  be.moe_route_backward(a.probs.data<T>(), a.topk_idx.data<int32_t>(), a.topk_w.data<T>(), g.dtopk_w.data<T>(), dprobs,
                        N, E, k, c.norm_topk_prob, g.dlogits.data<T>());
  linear_backward<T>(be, layer.router, a.h2.data<T>(), g.dlogits.data<T>(), g.dh.data<T>(), a.router_saved, N);
}

#define QLORA_MOE_INSTANTIATE(T)                                                                                 \
  template void LlamaModel::Impl::moe_forward<T>(int64_t, const Rows&, BlockActivations&, Tensor&, bool, uint64_t); \
  template void LlamaModel::Impl::moe_backward<T>(int64_t, const Rows&, BlockActivations&, BlockGradients&, const T*);
QLORA_MOE_INSTANTIATE(float)
QLORA_MOE_INSTANTIATE(double)
#undef QLORA_MOE_INSTANTIATE

}  // namespace qlora
