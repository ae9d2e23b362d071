// Internal to src/model: LlamaModel::Impl, the state of the engine (weights on the backend, the
// per-shape workspace of activation and gradient buffers, the gradients-ready hook) and the block
// code, whose forward and backward templates live in llama_blocks.cpp. llama.cpp builds the
// engine, applies adapters and runs inference; both share this.
// Legend: B batch, T sequence, N = B*T rows, C hidden, H heads, Hkv kv heads, D head dim, F ffn,
// V vocab, L layers, R rank.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "model/llama.h"
#include "model/model_weights.h"

namespace qlora {

// Everything one block's backward needs besides its input (all on the backend's device).
struct BlockActivations {
  Tensor h1, rstd1;      // (N, C), (N): rmsnorm before attention
  Tensor q, k, v;        // (N, H*D), (N, Hkv*D), (N, Hkv*D); q and k after RoPE
  Tensor q_pre, k_pre;   // qk_norm only: q and k projections before their head norms
  Tensor rstd_q, rstd_k; // qk_norm only: (N*H), (N*Hkv)
  Tensor attn, lse;      // (N, H*D), (B, H, T)
  Tensor x_mid;          // (N, C): residual stream after attention
  Tensor h2, rstd2;      // (N, C), (N): rmsnorm before the MLP
  Tensor gate, up, act;  // (N, F): projections and silu(gate) * up; MoE: (N*k, F), rows grouped by expert
  std::array<LinearSaved, kProjCount> saved;
  // MoE (Mixtral): the router's logits and probabilities (N, E), each row's k experts (N*k, i32)
  // and their weights (N*k); the N*k (row, expert) pairs grouped by expert: pair r is token
  // moe_token[r], slot moe_slot[r] (= t*k + j), input xs[r] (= h2[token]), output ys[r];
  // expert e owns pairs [expert_begin[e], expert_begin[e + 1]).
  Tensor router_logits, probs, topk_idx, topk_w;
  Tensor moe_token, moe_slot, moe_w;  // (N*k) i32, i32, T (the pair's weight)
  Tensor xs, ys;                      // (N*k, C)
  std::vector<int64_t> expert_begin;
  std::vector<LinearSaved> expert_saved;  // per expert and part (their adapters' x·Aᵀ)
  LinearSaved router_saved;

  static BlockActivations allocate(Backend& be, const LlamaConfig& c, int64_t B, int64_t T, DType dtype);
  size_t bytes() const;
};

// Gradient buffers of one block's backward, reused by every block.
struct BlockGradients {
  Tensor dh, d_attn, dq, dk, dv, d_act, dgate, dup;
  Tensor dq_pre, dk_pre;  // qk_norm only: gradients of the projections before the head norms
  Tensor dys, dxs;                  // MoE: (N*k, C) gradients of the experts' outputs and inputs
  Tensor dpair_w, dtopk_w, dlogits, dprobs;  // MoE: (N*k), (N*k), (N, E), (N, E)
  static BlockGradients allocate(Backend& be, const LlamaConfig& c, int64_t N, DType dtype);
  size_t bytes() const;
};

// Every activation and gradient buffer of a micro-batch shape, kept across calls: allocating them
// afresh each step costs page faults and zero-filling (measured: ~12% of a SmolLM2 step).
// Kernels overwrite their outputs; buffers that accumulate are zeroed where they are used.
struct Workspace {
  int64_t B = 0, T = 0;
  DType dtype = DType::F32;
  std::vector<Tensor> inputs;            // (N, C) per block input + the final hidden state (training)
  std::vector<BlockActivations> kept;    // per block, allocated for blocks that keep activations
  BlockActivations working;              // recomputed blocks, evaluation and inference
  Tensor hf, rstd_f, dhf, dx, scratch;   // (N, C), (N), (N, C), (N, C), (N, C)
  BlockGradients grads;
  Tensor ids, targets, positions, segments;  // (N) the batch on the device: i32, i32, i64, i32
};

// The rows one forward runs over: a (B, T) batch, or n new tokens of one sequence after `q_offset`
// cached ones (then `cache` holds every layer's keys and values).
struct Rows {
  int64_t B = 1, T = 1;
  const int32_t* segment_ids = nullptr;  // device (N), or null
  int64_t q_offset = 0;
  KvCache* cache = nullptr;
  int64_t N() const { return B * T; }
};

struct LlamaModel::Impl {
  LlamaConfig config;
  ModelOptions options;
  std::shared_ptr<Backend> backend;
  ModelWeights w;
  Tensor inv_freq;  // (D/2) f32 on the device, after rope_scaling
  MemoryStats stats;
  Workspace ws;
  std::function<void(const GradientsReady&)> hook;
  // Mixtral's load-balancing loss over one micro-batch: per expert, the (row, slot) assignments and
  // the summed router probabilities of the valid rows of every layer, and the rows counted.
  struct AuxStats {
    std::vector<double> counts, prob_sums;
    double rows = 0;
    double grad_weight = 0;  // d(total loss)/d(aux loss) for this micro-batch; 0: no aux gradient
    double loss() const;
  } aux;
  std::vector<int> group_of_block;  // block + 1 -> index into w.groups, -1 when it has no params

  enum class Mode { Train, Evaluate, Logits };

  Workspace& workspace(int64_t B, int64_t T, DType dtype);
  // Whether block l keeps only its input and is recomputed in the backward.
  bool recomputed(int64_t l) const { return options.checkpoint_every > 0 && l % options.checkpoint_every == 0; }
  uint64_t linear_seed(uint64_t seed, int64_t layer, int proj) const;
  // The dropout seed of an MoE layer's router (index 0) or expert e's part (1 + 3e + part).
  uint64_t moe_linear_seed(uint64_t seed, int64_t layer, int64_t index) const;
  AttentionShape attention_shape(const Rows& rows) const;
  void gradients_ready(int64_t block) const;

  // x_out (N, C) = block l applied to x_in (N, C); fills `a`. training keeps LoRA inputs for the
  // backward; with rows.cache, k and v are appended to the cache and attention reads it.
  template <typename T>
  void block_forward(int64_t l, const Rows& rows, const T* x_in, BlockActivations& a, Tensor& x_out, bool training,
                     uint64_t seed);
  // dx (N, C): in, the gradient of block l's output; out, the gradient of its input.
  template <typename T>
  void block_backward(int64_t l, const Rows& rows, const T* x_in, BlockActivations& a, BlockGradients& g, T* dx);
  // MoE half of block l: x_out (N, C) = x_mid + sum over the k chosen experts of weight * expert(h2).
  template <typename T>
  void moe_forward(int64_t l, const Rows& rows, BlockActivations& a, Tensor& x_out, bool training, uint64_t seed);
  // dx: in d(x_out); leaves d(h2) in g.dh (the caller adds the norm's backward).
  template <typename T>
  void moe_backward(int64_t l, const Rows& rows, BlockActivations& a, BlockGradients& g, const T* dx);
  // Adds block `a`'s routing over the batch's valid rows to `aux`.
  template <typename T>
  void add_aux_stats(const BlockActivations& a, const Batch& batch);
  // One micro-batch in training, evaluation or logits mode.
  template <typename T>
  LossSum run(const Batch& batch, Mode mode, double grad_scale, uint64_t seed, Tensor* logits_out);
  // n tokens after the cached ones (inference).
  template <typename T>
  Tensor infer(KvCache& cache, const int32_t* ids, int64_t n, bool all_logits);

  template <typename Fn>
  auto dispatch(Fn&& fn) {
    if (options.compute == DType::F64) return fn(double{});
    return fn(float{});
  }
};

}  // namespace qlora
