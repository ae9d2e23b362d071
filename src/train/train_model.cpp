// TrainModel: forward and backward of the Llama blocks over a micro-batch, written out per block as
// llm.c does (no autograd), templated on the scalar (float for training, double for gradient
// checks). Activations kept for the backward live in per-block buffers sized from (B, T); with
// gradient checkpointing a block keeps only its input and one working set is reused to recompute.
#include "train/train_model.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "backend/cpu/attention_train.h"
#include "backend/cpu/cross_entropy.h"
#include "backend/cpu/linear_train.h"
#include "backend/cpu/train_ops.h"
#include "core/error.h"
#include "core/rng.h"
#include "model/rope_scaling.h"
#include "train/train_weights.h"

namespace qlora {

TrainMethod train_method_from_name(const std::string& name) {
  if (name == "full") return TrainMethod::Full;
  if (name == "lora") return TrainMethod::Lora;
  if (name == "qlora") return TrainMethod::Qlora;
  fail("train", "unknown method '{}'; expected full, lora or qlora", name);
}

std::string train_method_name(TrainMethod method) {
  switch (method) {
    case TrainMethod::Full: return "full";
    case TrainMethod::Lora: return "lora";
    case TrainMethod::Qlora: return "qlora";
  }
  return "?";
}

namespace {

// The salt-th splitmix64 output after `seed`: an independent seed per (layer, projection).
uint64_t mix_seed(uint64_t seed, uint64_t salt) { return mix64(seed + kSplitmixIncrement * (salt + 1)); }

template <typename T>
constexpr DType kScalarDType = std::is_same_v<T, double> ? DType::F64 : DType::F32;

template <typename T>
Tensor buffer(Shape shape) {
  return Tensor::zeros(std::move(shape), kScalarDType<T>);
}

template <typename T>
T* ptr(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// Everything one block's backward needs besides its input.
struct BlockActivations {
  Tensor h1, rstd1;      // (N, C), (N): rmsnorm before attention
  Tensor q, k, v;        // (N, H*D), (N, Hkv*D), (N, Hkv*D); q and k after RoPE
  Tensor attn, lse;      // (N, H*D), (B, H, T)
  Tensor x_mid;          // (N, C): residual stream after attention
  Tensor h2, rstd2;      // (N, C), (N): rmsnorm before the MLP
  Tensor gate, up, act;  // (N, F): projections and silu(gate) * up
  std::array<LinearSaved, kProjCount> saved;

  template <typename T>
  static BlockActivations allocate(const LlamaConfig& c, int64_t B, int64_t T_) {
    const int64_t N = B * T_;
    BlockActivations a;
    a.h1 = buffer<T>({N, c.hidden_size});
    a.rstd1 = buffer<T>({N});
    a.q = buffer<T>({N, c.q_dim()});
    a.k = buffer<T>({N, c.kv_dim()});
    a.v = buffer<T>({N, c.kv_dim()});
    a.attn = buffer<T>({N, c.q_dim()});
    a.lse = buffer<T>({B, c.num_attention_heads, T_});
    a.x_mid = buffer<T>({N, c.hidden_size});
    a.h2 = buffer<T>({N, c.hidden_size});
    a.rstd2 = buffer<T>({N});
    a.gate = buffer<T>({N, c.intermediate_size});
    a.up = buffer<T>({N, c.intermediate_size});
    a.act = buffer<T>({N, c.intermediate_size});
    return a;
  }

  size_t bytes() const {
    size_t n = 0;
    for (const Tensor* t : {&h1, &rstd1, &q, &k, &v, &attn, &lse, &x_mid, &h2, &rstd2, &gate, &up, &act})
      n += t->nbytes();
    for (const LinearSaved& s : saved) n += s.xa.defined() ? s.xa.nbytes() : 0;
    return n;
  }
};

// Gradient buffers of one block's backward, reused by every block.
struct BlockGradients {
  Tensor dh, d_attn, dq, dk, dv, d_act, dgate, dup;

  template <typename T>
  static BlockGradients allocate(const LlamaConfig& c, int64_t N) {
    BlockGradients g;
    g.dh = buffer<T>({N, c.hidden_size});
    g.d_attn = buffer<T>({N, c.q_dim()});
    g.dq = buffer<T>({N, c.q_dim()});
    g.dk = buffer<T>({N, c.kv_dim()});
    g.dv = buffer<T>({N, c.kv_dim()});
    g.d_act = buffer<T>({N, c.intermediate_size});
    g.dgate = buffer<T>({N, c.intermediate_size});
    g.dup = buffer<T>({N, c.intermediate_size});
    return g;
  }
  size_t bytes() const {
    size_t n = 0;
    for (const Tensor* t : {&dh, &d_attn, &dq, &dk, &dv, &d_act, &dgate, &dup}) n += t->nbytes();
    return n;
  }
};

template <typename T>
void zero(Tensor& t) {
  std::memset(t.raw(), 0, t.nbytes());
}

}  // namespace

// Every activation and gradient buffer of a micro-batch shape, kept across calls: allocating them
// afresh each step costs page faults and zero-filling (measured: ~12% of a SmolLM2 step).
// Kernels overwrite their outputs; buffers that accumulate are zeroed where they are used.
struct Workspace {
  int64_t B = 0, T = 0;
  DType dtype = DType::F32;
  std::vector<Tensor> inputs;            // (N, C) per block input + the final hidden state
  std::vector<BlockActivations> kept;    // per block, allocated for blocks that keep activations
  BlockActivations working;              // recomputed blocks and evaluation
  Tensor hf, rstd_f, dhf, dx, scratch;   // (N, C), (N), (N, C), (N, C), (N, C)
  BlockGradients grads;
};

struct TrainModel::Impl {
  LlamaConfig config;
  TrainModelOptions options;
  TrainWeights w;
  std::vector<float> inv_freq;
  MemoryStats stats;
  Workspace ws;

  Workspace& workspace(int64_t B, int64_t T_, DType dtype) {
    if (ws.B == B && ws.T == T_ && ws.dtype == dtype) return ws;
    ws = Workspace();  // release the old shape first
    ws.B = B, ws.T = T_, ws.dtype = dtype;
    const int64_t N = B * T_, C = config.hidden_size, L = config.num_hidden_layers;
    for (int64_t l = 0; l <= L; ++l) ws.inputs.push_back(Tensor::zeros({N, C}, dtype));
    ws.kept.resize(size_t(L));
    ws.hf = Tensor::zeros({N, C}, dtype), ws.rstd_f = Tensor::zeros({N}, dtype);
    ws.dhf = Tensor::zeros({N, C}, dtype), ws.dx = Tensor::zeros({N, C}, dtype);
    ws.scratch = Tensor::zeros({N, C}, dtype);
    ws.grads = dtype == DType::F64 ? BlockGradients::allocate<double>(config, N) : BlockGradients::allocate<float>(config, N);
    return ws;
  }

  enum class Mode { Train, Evaluate, Logits };

  // Whether block l keeps only its input and is recomputed in the backward.
  bool recomputed(int64_t l) const { return options.checkpoint_every > 0 && l % options.checkpoint_every == 0; }

  template <typename T>
  void round(Tensor& t) const {
    if constexpr (std::is_same_v<T, float>) {
      if (options.compute == DType::BF16) round_to_bf16(t.data<float>(), size_t(t.numel()));
    }
  }

  uint64_t linear_seed(uint64_t seed, int64_t layer, int proj) const {
    return mix_seed(seed, uint64_t(layer) * kProjCount + uint64_t(proj));
  }

  cpu::AttentionShape attention_shape(const Batch& batch) const {
    cpu::AttentionShape s;
    s.B = batch.B, s.T = batch.T, s.H = config.num_attention_heads, s.Hkv = config.num_key_value_heads;
    s.D = config.head_dim, s.window = config.sliding_window;
    return s;
  }

  // x_out (N, C) = block l applied to x_in (N, C); fills `a`. saved != null keeps LoRA inputs.
  template <typename T>
  void block_forward(int64_t l, const Batch& batch, const T* x_in, BlockActivations& a, Tensor& x_out, bool training,
                     uint64_t seed) const {
    const TrainLayer& layer = w.layers[size_t(l)];
    const LlamaConfig& c = config;
    const int64_t N = batch.rows(), C = c.hidden_size;
    auto project = [&](int p, const Tensor& in, Tensor& out) {
      linear_forward<T>(layer.linears[size_t(p)], in.data<T>(), out.data<T>(), N, training, linear_seed(seed, l, p),
                        training ? &a.saved[size_t(p)] : nullptr);
      round<T>(out);
    };
    // Attention half.
    cpu::rmsnorm_forward<T>(x_in, ptr<T>(layer.input_norm), a.h1.data<T>(), a.rstd1.data<T>(), N, C, c.rms_norm_eps);
    round<T>(a.h1);
    project(kProjQ, a.h1, a.q);
    project(kProjK, a.h1, a.k);
    project(kProjV, a.h1, a.v);
    cpu::rope_forward<T>(a.q.data<T>(), batch.position_ids.data(), inv_freq.data(), N, c.num_attention_heads, c.head_dim);
    cpu::rope_forward<T>(a.k.data<T>(), batch.position_ids.data(), inv_freq.data(), N, c.num_key_value_heads,
                         c.head_dim);
    round<T>(a.q), round<T>(a.k);
    cpu::attention_forward<T>(a.q.data<T>(), a.k.data<T>(), a.v.data<T>(), batch.segment_ids.data(), a.attn.data<T>(),
                              a.lse.data<T>(), attention_shape(batch));
    round<T>(a.attn);
    project(kProjO, a.attn, a.x_mid);
    cpu::add_inplace<T>(a.x_mid.data<T>(), x_in, N * C);
    round<T>(a.x_mid);
    // MLP half.
    cpu::rmsnorm_forward<T>(a.x_mid.data<T>(), ptr<T>(layer.post_norm), a.h2.data<T>(), a.rstd2.data<T>(), N, C,
                            c.rms_norm_eps);
    round<T>(a.h2);
    project(kProjGate, a.h2, a.gate);
    project(kProjUp, a.h2, a.up);
    cpu::swiglu_forward<T>(a.gate.data<T>(), a.up.data<T>(), a.act.data<T>(), N * c.intermediate_size);
    round<T>(a.act);
    project(kProjDown, a.act, x_out);
    cpu::add_inplace<T>(x_out.data<T>(), a.x_mid.data<T>(), N * C);
    round<T>(x_out);
  }

  // dx (N, C): in, the gradient of block l's output; out, the gradient of its input.
  template <typename T>
  void block_backward(int64_t l, const Batch& batch, const T* x_in, BlockActivations& a, BlockGradients& g, T* dx) {
    TrainLayer& layer = w.layers[size_t(l)];
    const LlamaConfig& c = config;
    const int64_t N = batch.rows(), C = c.hidden_size;
    auto project_back = [&](int p, const Tensor& in, const T* dy, Tensor* din) {
      linear_backward<T>(layer.linears[size_t(p)], in.data<T>(), dy, din ? din->data<T>() : nullptr, a.saved[size_t(p)],
                         N);
    };
    // MLP half: x_out = x_mid + down(act).
    zero<T>(g.d_act);
    project_back(kProjDown, a.act, dx, &g.d_act);
    cpu::swiglu_backward<T>(g.d_act.data<T>(), a.gate.data<T>(), a.up.data<T>(), g.dgate.data<T>(), g.dup.data<T>(),
                            N * c.intermediate_size);
    zero<T>(g.dh);
    project_back(kProjGate, a.h2, g.dgate.data<T>(), &g.dh);
    project_back(kProjUp, a.h2, g.dup.data<T>(), &g.dh);
    cpu::rmsnorm_backward<T>(g.dh.data<T>(), a.x_mid.data<T>(), ptr<T>(layer.post_norm), a.rstd2.data<T>(), dx,
                             ptr<T>(layer.grad_post_norm), N, C);  // dx is now d(x_mid)
    // Attention half: x_mid = x_in + o(attn).
    zero<T>(g.d_attn);
    project_back(kProjO, a.attn, dx, &g.d_attn);
    cpu::attention_backward<T>(g.d_attn.data<T>(), a.q.data<T>(), a.k.data<T>(), a.v.data<T>(), a.attn.data<T>(),
                               a.lse.data<T>(), batch.segment_ids.data(), g.dq.data<T>(), g.dk.data<T>(),
                               g.dv.data<T>(), attention_shape(batch));
    cpu::rope_backward<T>(g.dq.data<T>(), batch.position_ids.data(), inv_freq.data(), N, c.num_attention_heads,
                          c.head_dim);
    cpu::rope_backward<T>(g.dk.data<T>(), batch.position_ids.data(), inv_freq.data(), N, c.num_key_value_heads,
                          c.head_dim);
    zero<T>(g.dh);
    project_back(kProjQ, a.h1, g.dq.data<T>(), &g.dh);
    project_back(kProjK, a.h1, g.dk.data<T>(), &g.dh);
    project_back(kProjV, a.h1, g.dv.data<T>(), &g.dh);
    cpu::rmsnorm_backward<T>(g.dh.data<T>(), x_in, ptr<T>(layer.input_norm), a.rstd1.data<T>(), dx,
                             ptr<T>(layer.grad_input_norm), N, C);  // dx is now d(x_in)
  }

  template <typename T>
  LossSum run(const Batch& batch, Mode mode, double grad_scale, uint64_t seed, Tensor* logits_out) {
    const LlamaConfig& c = config;
    const int64_t N = batch.rows(), C = c.hidden_size, L = c.num_hidden_layers;
    if (N <= 0) fail("train", "empty batch");
    if (int64_t(batch.ids.size()) != N || int64_t(batch.targets.size()) != N ||
        int64_t(batch.position_ids.size()) != N || int64_t(batch.segment_ids.size()) != N)
      fail("train", "batch arrays do not match B*T = {}", N);
    const bool train = mode == Mode::Train;

    Workspace& ws = workspace(batch.B, batch.T, kScalarDType<T>);
    // Block inputs (N, C) for every block plus the final hidden state; all kept when training
    // (rmsnorm's backward needs its input), two ping-pong buffers otherwise.
    auto input = [&ws, train](int64_t l) -> Tensor& { return train ? ws.inputs[size_t(l)] : ws.inputs[size_t(l % 2)]; };
    size_t saved_bytes = 0, working_bytes = 0;
    for (int64_t l = 0; l <= (train ? L : 1); ++l) saved_bytes += input(l).nbytes();

    cpu::embedding_forward<T>(w.embed, batch.ids.data(), N, input(0).template data<T>());
    round<T>(input(0));
    for (int64_t l = 0; l < L; ++l) {
      const bool keep = train && !recomputed(l);
      BlockActivations& a = keep ? ws.kept[size_t(l)] : ws.working;
      if (!a.h1.defined()) a = BlockActivations::allocate<T>(c, batch.B, batch.T);
      block_forward<T>(l, batch, input(l).template data<T>(), a, input(l + 1), train, seed);
      if (keep) saved_bytes += a.bytes();
      else working_bytes = std::max(working_bytes, a.bytes());
    }

    // Final norm and the fused LM head + cross-entropy.
    Tensor& x_final = input(L);
    cpu::rmsnorm_forward<T>(x_final.data<T>(), ptr<T>(w.norm), ws.hf.data<T>(), ws.rstd_f.data<T>(), N, C,
                            c.rms_norm_eps);
    round<T>(ws.hf);
    saved_bytes += ws.hf.nbytes() + ws.rstd_f.nbytes();
    LossSum result;
    if (mode == Mode::Logits) {
      Tensor logits = buffer<T>({N, c.vocab_size});
      cpu::matmul_xwt<T>(ws.hf.data<T>(), w.lm_head, logits.data<T>(), N);
      *logits_out = logits.to(DType::F32);
    }
    if (!train) {
      const cpu::CrossEntropyResult ce =
          cpu::cross_entropy_forward<T>(ws.hf.data<T>(), w.lm_head, batch.targets.data(), N);
      result.loss = ce.loss_sum, result.tokens = ce.count;
      return result;
    }

    T* dlm_head = w.tied ? ptr<T>(w.grad_embed) : ptr<T>(w.grad_lm_head);
    const cpu::CrossEntropyResult ce = cpu::cross_entropy_forward_backward<T>(
        ws.hf.data<T>(), w.lm_head, batch.targets.data(), N, T(grad_scale), ws.dhf.data<T>(), dlm_head);
    result.loss = ce.loss_sum, result.tokens = ce.count;
    Tensor& dx = ws.dx;
    zero<T>(dx);
    cpu::rmsnorm_backward<T>(ws.dhf.data<T>(), x_final.data<T>(), ptr<T>(w.norm), ws.rstd_f.data<T>(), dx.data<T>(),
                             ptr<T>(w.grad_norm), N, C);

    for (int64_t l = L - 1; l >= 0; --l) {
      const T* x_in = input(l).template data<T>();
      if (recomputed(l)) {  // a recomputed block's output is not needed again: write it to scratch
        block_forward<T>(l, batch, x_in, ws.working, ws.scratch, true, seed);
        working_bytes = std::max(working_bytes, ws.working.bytes() + ws.scratch.nbytes());
        block_backward<T>(l, batch, x_in, ws.working, ws.grads, dx.data<T>());
      } else {
        block_backward<T>(l, batch, x_in, ws.kept[size_t(l)], ws.grads, dx.data<T>());
      }
    }
    if (w.grad_embed.defined()) cpu::embedding_backward<T>(dx.data<T>(), batch.ids.data(), N, C, w.grad_embed.data<T>());

    working_bytes += ws.grads.bytes() + dx.nbytes() + ws.dhf.nbytes();
    // The loss chunk: at most kLossChunkRows rows of (V) logits and their gradient.
    working_bytes += size_t(std::min<int64_t>(N, cpu::kLossChunkRows)) * size_t(c.vocab_size) * sizeof(T) * 2;
    stats.activations_saved_peak = std::max(stats.activations_saved_peak, saved_bytes);
    stats.activations_peak = std::max(stats.activations_peak, saved_bytes + working_bytes);
    return result;
  }

  template <typename Fn>
  auto dispatch(Fn&& fn) {
    if (options.compute == DType::F64) return fn(double{});
    return fn(float{});
  }
};

TrainModel::TrainModel(LlamaModelFile file, TrainModelOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->config = file.config;
  impl_->options = options;
  if (options.checkpoint_every < 0)
    fail("train", "checkpoint_every must be >= 0 (0 = off, k = recompute every k-th block); got {}",
         options.checkpoint_every);
  impl_->inv_freq = rope_inverse_frequencies(file.config);
  impl_->w = build_train_weights(file.weights, file.config, options);
  impl_->stats.weights = impl_->w.weight_bytes;
  for (const Param& p : impl_->w.params) {
    impl_->stats.gradients += p.grad.nbytes();
    // Full fine-tuning in f32/f64 trains the weights in place: no separate master copy.
    const bool in_place = options.method == TrainMethod::Full && options.compute != DType::BF16;
    if (!in_place) impl_->stats.trainable += p.value.nbytes();
  }
}

TrainModel::~TrainModel() = default;

LossSum TrainModel::forward_backward(const Batch& batch, double grad_scale, uint64_t dropout_seed) {
  return impl_->dispatch([&](auto scalar) {
    using T = decltype(scalar);
    return impl_->run<T>(batch, Impl::Mode::Train, grad_scale, dropout_seed, nullptr);
  });
}

LossSum TrainModel::evaluate(const Batch& batch) {
  return impl_->dispatch([&](auto scalar) {
    using T = decltype(scalar);
    return impl_->run<T>(batch, Impl::Mode::Evaluate, 0.0, 0, nullptr);
  });
}

Tensor TrainModel::logits(const Batch& batch) {
  Tensor out;
  impl_->dispatch([&](auto scalar) {
    using T = decltype(scalar);
    return impl_->run<T>(batch, Impl::Mode::Logits, 0.0, 0, &out);
  });
  return out;
}

std::vector<Param> TrainModel::parameters() { return impl_->w.params; }

void TrainModel::zero_grad() {
  for (Param& p : impl_->w.params) std::memset(p.grad.raw(), 0, p.grad.nbytes());
}

void TrainModel::parameters_updated() {
  for (auto& [master, compute] : impl_->w.refreshes)
    convert_f32_to_bf16(master.data<float>(), compute.data<uint16_t>(), size_t(master.numel()));
}

MemoryStats TrainModel::memory() const { return impl_->stats; }

const LlamaConfig& TrainModel::config() const { return impl_->config; }
const TrainModelOptions& TrainModel::options() const { return impl_->options; }

std::vector<const Linear*> TrainModel::layer_linears(int64_t layer) const {
  if (layer < 0 || layer >= int64_t(impl_->w.layers.size()))
    fail("train", "layer {} out of range [0, {})", layer, impl_->w.layers.size());
  std::vector<const Linear*> out;
  for (const Linear& lin : impl_->w.layers[size_t(layer)].linears) out.push_back(&lin);
  return out;
}

}  // namespace qlora
