// The forward and backward of the Llama blocks, written out per block as llm.c does (no autograd),
// templated on the scalar (float for training and inference, double for gradient checks). Every
// buffer is a backend allocation and every step a backend kernel. Activations kept for the backward
// live in per-block buffers sized from (B, T); with gradient checkpointing a block keeps only its
// input and one working set is reused to recompute. Inference runs the same block_forward with a
// KV cache and the working set only.
#include <algorithm>
#include <type_traits>

#include "core/error.h"
#include "core/rng.h"
#include "model/llama_engine.h"

namespace qlora {

namespace {

// The salt-th splitmix64 output after `seed`: an independent seed per (layer, projection).
uint64_t mix_seed(uint64_t seed, uint64_t salt) { return mix64(seed + kSplitmixIncrement * (salt + 1)); }

template <typename T>
constexpr DType kScalarDType = std::is_same_v<T, double> ? DType::F64 : DType::F32;

template <typename T>
T* ptr(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// The MLP's hidden activations: (N, F) for a dense layer, (N*k, moe_intermediate_size) for a sparse
// one (a row per (token, expert) pair); a model with both kinds (Qwen3-MoE's mlp_only_layers)
// holds the larger, flat.
Shape mlp_hidden_shape(const LlamaConfig& c, int64_t N) {
  const int64_t sparse_layers = c.moe_layer_count();
  const Shape dense{N, c.intermediate_size}, sparse{N * c.num_experts_per_tok, c.moe_intermediate_size};
  if (sparse_layers == 0) return dense;
  if (sparse_layers == c.num_hidden_layers) return sparse;
  return {std::max(dense[0] * dense[1], sparse[0] * sparse[1])};
}

}  // namespace

BlockActivations BlockActivations::allocate(Backend& be, const LlamaConfig& c, int64_t B, int64_t T, DType dtype) {
  const int64_t N = B * T;
  BlockActivations a;
  a.h1 = be.zeros({N, c.hidden_size}, dtype);
  a.rstd1 = be.zeros({N}, dtype);
  a.q = be.zeros({N, c.q_dim()}, dtype);
  a.k = be.zeros({N, c.kv_dim()}, dtype);
  a.v = be.zeros({N, c.kv_dim()}, dtype);
  a.attn = be.zeros({N, c.q_dim()}, dtype);
  a.lse = be.zeros({B, c.num_attention_heads, T}, dtype);
  a.x_mid = be.zeros({N, c.hidden_size}, dtype);
  a.h2 = be.zeros({N, c.hidden_size}, dtype);
  a.rstd2 = be.zeros({N}, dtype);
  const Shape hidden = mlp_hidden_shape(c, N);
  a.gate = be.zeros(hidden, dtype);
  a.up = be.zeros(hidden, dtype);
  a.act = be.zeros(hidden, dtype);
  if (c.moe()) {
    const int64_t E = c.num_local_experts, Nk = N * c.num_experts_per_tok;
    a.router_logits = be.zeros({N, E}, dtype), a.probs = be.zeros({N, E}, dtype);
    a.topk_idx = be.zeros({Nk}, DType::I32), a.topk_w = be.zeros({Nk}, dtype);
    a.moe_token = be.zeros({Nk}, DType::I32), a.moe_slot = be.zeros({Nk}, DType::I32), a.moe_w = be.zeros({Nk}, dtype);
    a.xs = be.zeros({Nk, c.hidden_size}, dtype), a.ys = be.zeros({Nk, c.hidden_size}, dtype);
    a.expert_saved.resize(size_t(E * 3));
  }
  if (c.qk_norm) {
    a.q_pre = be.zeros({N, c.q_dim()}, dtype), a.k_pre = be.zeros({N, c.kv_dim()}, dtype);
    a.rstd_q = be.zeros({N * c.num_attention_heads}, dtype), a.rstd_k = be.zeros({N * c.num_key_value_heads}, dtype);
  }
  return a;
}

size_t BlockActivations::bytes() const {
  size_t n = 0;
  for (const Tensor* t : {&h1, &rstd1, &q, &k, &v, &attn, &lse, &x_mid, &h2, &rstd2, &gate, &up, &act, &q_pre,
                          &k_pre, &rstd_q, &rstd_k, &router_logits, &probs, &topk_idx, &topk_w, &moe_token, &moe_slot,
                          &moe_w, &xs, &ys})
    n += t->defined() ? t->nbytes() : 0;
  for (const LinearSaved& s : saved) n += s.xa.defined() ? s.xa.nbytes() : 0;
  for (const LinearSaved& s : expert_saved) n += s.xa.defined() ? s.xa.nbytes() : 0;
  n += router_saved.xa.defined() ? router_saved.xa.nbytes() : 0;
  return n;
}

BlockGradients BlockGradients::allocate(Backend& be, const LlamaConfig& c, int64_t N, DType dtype) {
  BlockGradients g;
  g.dh = be.zeros({N, c.hidden_size}, dtype);
  g.d_attn = be.zeros({N, c.q_dim()}, dtype);
  g.dq = be.zeros({N, c.q_dim()}, dtype);
  g.dk = be.zeros({N, c.kv_dim()}, dtype);
  g.dv = be.zeros({N, c.kv_dim()}, dtype);
  const Shape hidden = mlp_hidden_shape(c, N);
  g.d_act = be.zeros(hidden, dtype);
  g.dgate = be.zeros(hidden, dtype);
  g.dup = be.zeros(hidden, dtype);
  if (c.moe()) {
    const int64_t F_rows = N * c.num_experts_per_tok;
    g.dys = be.zeros({F_rows, c.hidden_size}, dtype), g.dxs = be.zeros({F_rows, c.hidden_size}, dtype);
    g.dpair_w = be.zeros({F_rows}, dtype), g.dtopk_w = be.zeros({F_rows}, dtype);
    g.dlogits = be.zeros({N, c.num_local_experts}, dtype), g.dprobs = be.zeros({N, c.num_local_experts}, dtype);
  }
  if (c.qk_norm) g.dq_pre = be.zeros({N, c.q_dim()}, dtype), g.dk_pre = be.zeros({N, c.kv_dim()}, dtype);
  return g;
}

size_t BlockGradients::bytes() const {
  size_t n = 0;
  for (const Tensor* t : {&dh, &d_attn, &dq, &dk, &dv, &d_act, &dgate, &dup, &dq_pre, &dk_pre, &dys, &dxs, &dpair_w,
                          &dtopk_w, &dlogits, &dprobs})
    n += t->defined() ? t->nbytes() : 0;
  return n;
}

Workspace& LlamaModel::Impl::workspace(int64_t B, int64_t T_, DType dtype) {
  if (ws.B == B && ws.T == T_ && ws.dtype == dtype) return ws;
  ws = Workspace();  // release the old shape first
  ws.B = B, ws.T = T_, ws.dtype = dtype;
  Backend& be = *backend;
  const int64_t N = B * T_, C = config.hidden_size, L = config.num_hidden_layers;
  // Inference and evaluation use two of these as ping-pong buffers; training keeps all of them.
  for (int64_t l = 0; l <= (options.frozen ? 1 : L); ++l) ws.inputs.push_back(be.zeros({N, C}, dtype));
  ws.kept.resize(size_t(L));
  ws.hf = be.zeros({N, C}, dtype), ws.rstd_f = be.zeros({N}, dtype);
  ws.scratch = be.zeros({N, C}, dtype);
  if (!options.frozen) {
    ws.dhf = be.zeros({N, C}, dtype), ws.dx = be.zeros({N, C}, dtype);
    ws.grads = BlockGradients::allocate(be, config, N, dtype);
  }
  ws.ids = be.zeros({N}, DType::I32), ws.targets = be.zeros({N}, DType::I32);
  ws.positions = be.zeros({N}, DType::I64), ws.segments = be.zeros({N}, DType::I32);
  return ws;
}

uint64_t LlamaModel::Impl::linear_seed(uint64_t seed, int64_t layer, int proj) const {
  return mix_seed(seed, uint64_t(layer) * kProjCount + uint64_t(proj));
}

uint64_t LlamaModel::Impl::moe_linear_seed(uint64_t seed, int64_t layer, int64_t index) const {
  constexpr uint64_t kMoeStream = 0x4d6f45;  // a stream apart from linear_seed's
  return mix_seed(mix_seed(seed, kMoeStream), uint64_t(layer) * uint64_t(3 * config.num_local_experts + 1) + uint64_t(index));
}

AttentionShape LlamaModel::Impl::attention_shape(const Rows& rows) const {
  AttentionShape s;
  s.B = rows.B, s.T = rows.T, s.H = config.num_attention_heads, s.Hkv = config.num_key_value_heads;
  s.D = config.head_dim, s.window = config.sliding_window;
  s.q_offset = rows.q_offset;
  s.Tk = rows.cache ? rows.q_offset + rows.T : 0;
  return s;
}

void LlamaModel::Impl::gradients_ready(int64_t block) const {
  if (!hook) return;
  const int g = group_of_block[size_t(block + 1)];
  if (g < 0) return;
  const ParamGroup& p = w.groups[size_t(g)];
  hook({p.block, p.first_param, p.param_count, p.offset, p.bytes});
}

namespace {

// logits (N, V) = h · lm_headᵀ; with bf16 compute on a bf16 head, the bf16 product (h is already
// rounded to bf16, so only the summation order differs from the f32 kernel).
template <typename T>
void lm_head_logits(Backend& be, const T* h, const Tensor& lm_head, T* logits, int64_t N, DType compute) {
  if constexpr (std::is_same_v<T, float>) {
    if (compute == DType::BF16 && lm_head.dtype() == DType::BF16) return be.matmul_xwt_bf16(h, lm_head, logits, N);
  }
  be.matmul_xwt(h, lm_head, logits, N);
}

// The fused LM head + cross-entropy (loss only, or with dh written and dw accumulated); with
// bf16 compute on a bf16 head, the bf16 products and bf16 logits.
template <typename T>
CrossEntropyResult head_loss(Backend& be, const T* h, const Tensor& lm_head, const int32_t* targets, int64_t N,
                             DType compute, T grad_scale = T(0), T* dh = nullptr, T* dw = nullptr) {
  if constexpr (std::is_same_v<T, float>) {
    if (compute == DType::BF16 && lm_head.dtype() == DType::BF16)
      return dh ? be.cross_entropy_forward_backward_bf16(h, lm_head, targets, N, grad_scale, dh, dw, kLossChunkRows)
                : be.cross_entropy_forward_bf16(h, lm_head, targets, N, nullptr, kLossChunkRows);
  }
  return dh ? be.cross_entropy_forward_backward(h, lm_head, targets, N, grad_scale, dh, dw, kLossChunkRows)
            : be.cross_entropy_forward(h, lm_head, targets, N, static_cast<T*>(nullptr), kLossChunkRows);
}

}  // namespace

template <typename T>
void LlamaModel::Impl::block_forward(int64_t l, const Rows& rows, const T* x_in, BlockActivations& a, Tensor& x_out,
                                     bool training, uint64_t seed) {
  Backend& be = *backend;
  const ModelLayer& layer = w.layers[size_t(l)];
  const LlamaConfig& c = config;
  const int64_t N = rows.N(), C = c.hidden_size;
  const bool bf16 = std::is_same_v<T, float> && options.compute == DType::BF16;
  auto round = [&](Tensor& t) {
    if constexpr (std::is_same_v<T, float>)
      if (bf16) be.round_to_bf16(t.data<float>(), t.numel());
  };
  auto project = [&](int p, const Tensor& in, Tensor& out) {
    linear_forward<T>(be, layer.linears[size_t(p)], in.data<T>(), out.data<T>(), N, training, linear_seed(seed, l, p),
                      training ? &a.saved[size_t(p)] : nullptr);
    round(out);
  };
  const int64_t* positions = ws.positions.data<int64_t>();
  // Attention half.
  be.rmsnorm_forward(x_in, ptr<T>(layer.input_norm), a.h1.data<T>(), a.rstd1.data<T>(), N, C, c.rms_norm_eps);
  round(a.h1);
  if (c.qk_norm) {  // Qwen3: each head of q and k is RMS-normalised (rows of D) before RoPE
    const int64_t H = c.num_attention_heads, Hkv = c.num_key_value_heads, D = c.head_dim;
    project(kProjQ, a.h1, a.q_pre);
    project(kProjK, a.h1, a.k_pre);
    // One rounding after the f32 norm, like every norm here. transformers rounds twice on bf16
    // tensors (`weight * hidden.to(bf16)`); measured on the tiny qwen3 fixture that form lands no
    // nearer torch's bf16 losses, logits or 10-step curve (tests/parity/test_train_parity.cpp).
    be.rmsnorm_forward(a.q_pre.data<T>(), ptr<T>(layer.q_norm), a.q.data<T>(), a.rstd_q.data<T>(), N * H, D,
                       c.rms_norm_eps);
    be.rmsnorm_forward(a.k_pre.data<T>(), ptr<T>(layer.k_norm), a.k.data<T>(), a.rstd_k.data<T>(), N * Hkv, D,
                       c.rms_norm_eps);
    round(a.q), round(a.k);  // torch stores the normed heads in bf16 before RoPE
  } else {
    project(kProjQ, a.h1, a.q);
    project(kProjK, a.h1, a.k);
  }
  project(kProjV, a.h1, a.v);
  be.rope_forward(a.q.data<T>(), positions, inv_freq.data<float>(), N, c.num_attention_heads, c.head_dim);
  be.rope_forward(a.k.data<T>(), positions, inv_freq.data<float>(), N, c.num_key_value_heads, c.head_dim);
  round(a.q), round(a.k);
  const T* keys = a.k.data<T>();
  const T* values = a.v.data<T>();
  if (rows.cache) {  // append this call's keys and values, then attend over the whole cache
    Tensor& kc = rows.cache->k_[size_t(l)];
    Tensor& vc = rows.cache->v_[size_t(l)];
    const size_t row_bytes = size_t(c.kv_dim()) * sizeof(T), at = size_t(rows.q_offset) * row_bytes;
    be.copy(static_cast<char*>(kc.raw()) + at, a.k.raw(), size_t(N) * row_bytes);
    be.copy(static_cast<char*>(vc.raw()) + at, a.v.raw(), size_t(N) * row_bytes);
    keys = kc.data<T>(), values = vc.data<T>();
  }
  be.attention_forward(a.q.data<T>(), keys, values, rows.segment_ids, a.attn.data<T>(), a.lse.data<T>(),
                       attention_shape(rows));
  round(a.attn);
  project(kProjO, a.attn, a.x_mid);
  be.add_inplace(a.x_mid.data<T>(), x_in, N * C);
  round(a.x_mid);
  // MLP half.
  be.rmsnorm_forward(a.x_mid.data<T>(), ptr<T>(layer.post_norm), a.h2.data<T>(), a.rstd2.data<T>(), N, C,
                     c.rms_norm_eps);
  round(a.h2);
  if (c.moe_layer(l)) {
    moe_forward<T>(l, rows, a, x_out, training, seed);
    round(x_out);
    return;
  }
  project(kProjGate, a.h2, a.gate);
  project(kProjUp, a.h2, a.up);
  be.swiglu_forward(a.gate.data<T>(), a.up.data<T>(), a.act.data<T>(), N * c.intermediate_size);
  round(a.act);
  project(kProjDown, a.act, x_out);
  be.add_inplace(x_out.data<T>(), a.x_mid.data<T>(), N * C);
  round(x_out);
}

template <typename T>
void LlamaModel::Impl::block_backward(int64_t l, const Rows& rows, const T* x_in, BlockActivations& a,
                                      BlockGradients& g, T* dx) {
  Backend& be = *backend;
  ModelLayer& layer = w.layers[size_t(l)];
  const LlamaConfig& c = config;
  const int64_t N = rows.N(), C = c.hidden_size;
  auto zero = [&](Tensor& t) { be.memset(t.raw(), 0, t.nbytes()); };
  auto project_back = [&](int p, const Tensor& in, const T* dy, Tensor* din) {
    linear_backward<T>(be, layer.linears[size_t(p)], in.data<T>(), dy, din ? din->data<T>() : nullptr,
                       a.saved[size_t(p)], N);
  };
  const int64_t* positions = ws.positions.data<int64_t>();
  // MLP half: x_out = x_mid + down(act), or the experts' weighted sum.
  if (c.moe_layer(l)) {
    moe_backward<T>(l, rows, a, g, dx);
  } else {
    zero(g.d_act);
    project_back(kProjDown, a.act, dx, &g.d_act);
    be.swiglu_backward(g.d_act.data<T>(), a.gate.data<T>(), a.up.data<T>(), g.dgate.data<T>(), g.dup.data<T>(),
                       N * c.intermediate_size);
    zero(g.dh);
    project_back(kProjGate, a.h2, g.dgate.data<T>(), &g.dh);
    project_back(kProjUp, a.h2, g.dup.data<T>(), &g.dh);
  }
  be.rmsnorm_backward(g.dh.data<T>(), a.x_mid.data<T>(), ptr<T>(layer.post_norm), a.rstd2.data<T>(), dx,
                      ptr<T>(layer.grad_post_norm), N, C);  // dx is now d(x_mid)
  // Attention half: x_mid = x_in + o(attn).
  zero(g.d_attn);
  project_back(kProjO, a.attn, dx, &g.d_attn);
  be.attention_backward(g.d_attn.data<T>(), a.q.data<T>(), a.k.data<T>(), a.v.data<T>(), a.attn.data<T>(),
                        a.lse.data<T>(), rows.segment_ids, g.dq.data<T>(), g.dk.data<T>(), g.dv.data<T>(),
                        attention_shape(rows));
  be.rope_backward(g.dq.data<T>(), positions, inv_freq.data<float>(), N, c.num_attention_heads, c.head_dim);
  be.rope_backward(g.dk.data<T>(), positions, inv_freq.data<float>(), N, c.num_key_value_heads, c.head_dim);
  const T* dq = g.dq.data<T>();
  const T* dk = g.dk.data<T>();
  if (c.qk_norm) {  // through the head norms: dq, dk become the projections' output gradients
    const int64_t H = c.num_attention_heads, Hkv = c.num_key_value_heads, D = c.head_dim;
    zero(g.dq_pre), zero(g.dk_pre);
    be.rmsnorm_backward(dq, a.q_pre.data<T>(), ptr<T>(layer.q_norm), a.rstd_q.data<T>(), g.dq_pre.data<T>(),
                        ptr<T>(layer.grad_q_norm), N * H, D);
    be.rmsnorm_backward(dk, a.k_pre.data<T>(), ptr<T>(layer.k_norm), a.rstd_k.data<T>(), g.dk_pre.data<T>(),
                        ptr<T>(layer.grad_k_norm), N * Hkv, D);
    dq = g.dq_pre.data<T>(), dk = g.dk_pre.data<T>();
  }
  zero(g.dh);
  project_back(kProjQ, a.h1, dq, &g.dh);
  project_back(kProjK, a.h1, dk, &g.dh);
  project_back(kProjV, a.h1, g.dv.data<T>(), &g.dh);
  be.rmsnorm_backward(g.dh.data<T>(), x_in, ptr<T>(layer.input_norm), a.rstd1.data<T>(), dx,
                      ptr<T>(layer.grad_input_norm), N, C);  // dx is now d(x_in)
}

template <typename T>
void LlamaModel::Impl::add_aux_stats(const BlockActivations& a, const Batch& batch) {
  const int64_t N = batch.rows(), E = config.num_local_experts, k = config.num_experts_per_tok;
  std::vector<T> probs(static_cast<size_t>(N * E));
  std::vector<int32_t> idx(static_cast<size_t>(N * k));
  backend->download(probs.data(), a.probs);
  backend->download(idx.data(), a.topk_idx);
  for (int64_t t = 0; t < N; ++t) {
    if (batch.segment_ids[size_t(t)] < 0) continue;  // padding (attention_mask 0)
    aux.rows += 1;
    for (int64_t j = 0; j < k; ++j) aux.counts[size_t(idx[size_t(t * k + j)])] += 1;
    for (int64_t e = 0; e < E; ++e) aux.prob_sums[size_t(e)] += double(probs[size_t(t * E + e)]);
  }
}

template <typename T>
LossSum LlamaModel::Impl::run(const Batch& batch, Mode mode, double grad_scale, uint64_t seed, Tensor* logits_out) {
  Backend& be = *backend;
  const LlamaConfig& c = config;
  const int64_t N = batch.rows(), C = c.hidden_size, L = c.num_hidden_layers;
  if (N <= 0) fail("train", "empty batch");
  if (int64_t(batch.ids.size()) != N || int64_t(batch.targets.size()) != N ||
      int64_t(batch.position_ids.size()) != N || int64_t(batch.segment_ids.size()) != N)
    fail("train", "batch arrays do not match B*T = {}", N);
  const bool train = mode == Mode::Train;
  if (train && options.frozen) fail("train", "forward_backward on a frozen (inference) model; it has no parameters");
  auto round = [&](Tensor& t) {
    if constexpr (std::is_same_v<T, float>)
      if (options.compute == DType::BF16) be.round_to_bf16(t.data<float>(), t.numel());
  };

  Workspace& ws = workspace(batch.B, batch.T, kScalarDType<T>);
  be.upload(ws.ids, batch.ids.data());
  be.upload(ws.targets, batch.targets.data());
  be.upload(ws.positions, batch.position_ids.data());
  be.upload(ws.segments, batch.segment_ids.data());
  const Rows rows{batch.B, batch.T, ws.segments.data<int32_t>(), 0, nullptr};
  // Block inputs (N, C) for every block plus the final hidden state; all kept when training
  // (rmsnorm's backward needs its input), two ping-pong buffers otherwise.
  auto input = [&ws, train](int64_t l) -> Tensor& { return train ? ws.inputs[size_t(l)] : ws.inputs[size_t(l % 2)]; };
  size_t saved_bytes = 0, working_bytes = 0;
  for (int64_t l = 0; l <= (train ? L : 1); ++l) saved_bytes += input(l).nbytes();

  be.embedding_forward(w.embed, ws.ids.data<int32_t>(), N, input(0).template data<T>());
  round(input(0));
  // An MoE model's load-balancing loss needs every sparse layer's routing before any backward.
  const bool with_aux = c.moe() && c.output_router_logits;
  aux = AuxStats();
  aux.counts.assign(size_t(c.num_local_experts), 0.0), aux.prob_sums.assign(size_t(c.num_local_experts), 0.0);
  for (int64_t l = 0; l < L; ++l) {
    const bool keep = train && !recomputed(l);
    BlockActivations& a = keep ? ws.kept[size_t(l)] : ws.working;
    if (!a.h1.defined()) a = BlockActivations::allocate(be, c, batch.B, batch.T, kScalarDType<T>);
    block_forward<T>(l, rows, input(l).template data<T>(), a, input(l + 1), train, seed);
    if (with_aux && c.moe_layer(l)) add_aux_stats<T>(a, batch);
    if (keep) saved_bytes += a.bytes();
    else working_bytes = std::max(working_bytes, a.bytes());
  }
  if (with_aux && train) aux.grad_weight = c.router_aux_loss_coef * grad_scale * double(batch.target_count());

  // Final norm and the fused LM head + cross-entropy.
  Tensor& x_final = input(L);
  be.rmsnorm_forward(x_final.data<T>(), ptr<T>(w.norm), ws.hf.data<T>(), ws.rstd_f.data<T>(), N, C, c.rms_norm_eps);
  round(ws.hf);
  saved_bytes += ws.hf.nbytes() + ws.rstd_f.nbytes();
  LossSum result;
  result.aux_loss = with_aux ? aux.loss() : 0.0;
  result.aux_term = c.router_aux_loss_coef * result.aux_loss * double(batch.target_count());
  if (mode == Mode::Logits) {
    Tensor logits = be.zeros({N, c.vocab_size}, kScalarDType<T>);
    lm_head_logits<T>(be, ws.hf.data<T>(), w.lm_head, logits.data<T>(), N, options.compute);
    *logits_out = be.to_host(logits).to(DType::F32);
  }
  const int32_t* targets = ws.targets.data<int32_t>();
  if (!train) {
    const CrossEntropyResult ce = head_loss<T>(be, ws.hf.data<T>(), w.lm_head, targets, N, options.compute);
    result.loss = ce.loss_sum, result.tokens = ce.count;
    return result;
  }

  T* dlm_head = w.tied ? ptr<T>(w.grad_embed) : ptr<T>(w.grad_lm_head);
  const CrossEntropyResult ce = head_loss<T>(be, ws.hf.data<T>(), w.lm_head, targets, N, options.compute,
                                             T(grad_scale), ws.dhf.data<T>(), dlm_head);
  result.loss = ce.loss_sum, result.tokens = ce.count;
  Tensor& dx = ws.dx;
  be.memset(dx.raw(), 0, dx.nbytes());
  be.rmsnorm_backward(ws.dhf.data<T>(), x_final.data<T>(), ptr<T>(w.norm), ws.rstd_f.data<T>(), dx.data<T>(),
                      ptr<T>(w.grad_norm), N, C);
  gradients_ready(L);  // the final norm and an untied head are complete

  for (int64_t l = L - 1; l >= 0; --l) {
    const T* x_in = input(l).template data<T>();
    if (recomputed(l)) {  // a recomputed block's output is not needed again: write it to scratch
      block_forward<T>(l, rows, x_in, ws.working, ws.scratch, true, seed);
      working_bytes = std::max(working_bytes, ws.working.bytes() + ws.scratch.nbytes());
      block_backward<T>(l, rows, x_in, ws.working, ws.grads, dx.data<T>());
    } else {
      block_backward<T>(l, rows, x_in, ws.kept[size_t(l)], ws.grads, dx.data<T>());
    }
    gradients_ready(l);
  }
  if (w.grad_embed.defined()) be.embedding_backward(dx.data<T>(), ws.ids.data<int32_t>(), N, C, w.grad_embed.data<T>());
  gradients_ready(-1);

  working_bytes += ws.grads.bytes() + dx.nbytes() + ws.dhf.nbytes();
  // The loss chunk: at most kLossChunkRows rows of (V) logits and their gradient.
  working_bytes += size_t(std::min<int64_t>(N, kLossChunkRows)) * size_t(c.vocab_size) * sizeof(T) * 2;
  stats.activations_saved_peak = std::max(stats.activations_saved_peak, saved_bytes);
  stats.activations_peak = std::max(stats.activations_peak, saved_bytes + working_bytes);
  return result;
}

template <typename T>
Tensor LlamaModel::Impl::infer(KvCache& cache, const int32_t* ids, int64_t n, bool all_logits) {
  Backend& be = *backend;
  const LlamaConfig& c = config;
  const int64_t p0 = cache.size(), C = c.hidden_size, L = c.num_hidden_layers;
  if (n <= 0) fail("forward", "no tokens to run");
  if (p0 + n > cache.capacity())
    fail("forward", "sequence of {} tokens exceeds the context of {}", p0 + n, cache.capacity());
  if (cache.layers_ != L || cache.kv_dim_ != c.kv_dim())
    fail("forward", "the KV cache was made for {} layers of {} kv features; the model has {} and {}", cache.layers_,
         cache.kv_dim_, L, c.kv_dim());
  if (cache.k_.empty() || cache.k_[0].dtype() != kScalarDType<T> || cache.k_[0].device() != be.device()) {
    cache.k_.clear(), cache.v_.clear();
    for (int64_t l = 0; l < L; ++l) {
      cache.k_.push_back(be.zeros({cache.max_seq_, c.kv_dim()}, kScalarDType<T>));
      cache.v_.push_back(be.zeros({cache.max_seq_, c.kv_dim()}, kScalarDType<T>));
    }
  }
  auto round = [&](Tensor& t) {
    if constexpr (std::is_same_v<T, float>)
      if (options.compute == DType::BF16) be.round_to_bf16(t.data<float>(), t.numel());
  };
  Workspace& ws = workspace(1, n, kScalarDType<T>);
  std::vector<int64_t> positions(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) positions[size_t(i)] = p0 + i;
  be.upload(ws.ids, ids);
  be.upload(ws.positions, positions.data());
  const Rows rows{1, n, nullptr, p0, &cache};

  be.embedding_forward(w.embed, ws.ids.data<int32_t>(), n, ws.inputs[0].data<T>());
  round(ws.inputs[0]);
  if (!ws.working.h1.defined()) ws.working = BlockActivations::allocate(be, c, 1, n, kScalarDType<T>);
  for (int64_t l = 0; l < L; ++l)
    block_forward<T>(l, rows, ws.inputs[size_t(l % 2)].data<T>(), ws.working, ws.inputs[size_t((l + 1) % 2)], false, 0);
  cache.size_ += n;

  const int64_t out_rows = all_logits ? n : 1;
  const T* last = ws.inputs[size_t(L % 2)].data<T>() + (n - out_rows) * C;
  be.rmsnorm_forward(last, ptr<T>(w.norm), ws.hf.data<T>(), ws.rstd_f.data<T>(), out_rows, C, c.rms_norm_eps);
  round(ws.hf);
  Tensor logits = be.zeros({out_rows, c.vocab_size}, kScalarDType<T>);  // (rows, V)
  lm_head_logits<T>(be, ws.hf.data<T>(), w.lm_head, logits.data<T>(), out_rows, options.compute);
  return be.to_host(logits).to(DType::F32);
}

#define QLORA_ENGINE_INSTANTIATE(T)                                                                                 \
  template void LlamaModel::Impl::block_forward<T>(int64_t, const Rows&, const T*, BlockActivations&, Tensor&, bool, \
                                                   uint64_t);                                                       \
  template void LlamaModel::Impl::block_backward<T>(int64_t, const Rows&, const T*, BlockActivations&,              \
                                                    BlockGradients&, T*);                                           \
  template LossSum LlamaModel::Impl::run<T>(const Batch&, Mode, double, uint64_t, Tensor*);                         \
  template void LlamaModel::Impl::add_aux_stats<T>(const BlockActivations&, const Batch&);                          \
  template Tensor LlamaModel::Impl::infer<T>(KvCache&, const int32_t*, int64_t, bool);
QLORA_ENGINE_INSTANTIATE(float)
QLORA_ENGINE_INSTANTIATE(double)
#undef QLORA_ENGINE_INSTANTIATE

}  // namespace qlora
