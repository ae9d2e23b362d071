// Backend: the seam between the engine and the hardware. Everything the engine allocates, copies
// or computes goes through one: memory (allocate, memset, copies between host and device, streams
// and synchronisation) and every kernel of training and inference, on raw device pointers plus
// sizes (weights as Tensors, whose dtype picks the kernel). The CPU backend (backend/cpu) is always
// built; the CUDA backend implements the same interface with the same argument order, so a parity
// test is a loop over the kernels.
//
// Kernels come in float and double (finite-difference checks); a backend without double kernels
// inherits the defaults, which throw "[<backend>] <op>: no f64 kernel". Front-ends (lora/, model/,
// optim/) validate arguments and name the bad input; backends only compute (they still check what
// an internal bug could get wrong: dtypes, devices, token ids in range).
// Dispatch is virtual: a kernel call costs one indirect call (~2 ns) against >= 1 µs of work even
// in single-token decode; docs/architecture.md has the measurement.
//
// Conventions: gradients of an op's inputs are written (overwritten) unless the comment says
// "+=", parameter gradients always accumulate, so micro-batches add up.
// Legend (every kernel): N rows (B*T tokens), K input features, O output features, C hidden,
// H heads, Hkv kv heads, D head dim, V vocab, R rank.
// Tested in tests/unit/test_backend_seam.cpp (every engine memory access goes through the backend)
// and per kernel in tests/unit/test_train_ops.cpp, tests/grad/test_op_grads.cpp,
// tests/quant/test_qmatmul.cpp, tests/unit/test_optim.cpp, tests/unit/test_gemm_bf16.cpp (the bf16
// products and the bf16 LM head on every ISA and engine).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/device.h"
#include "core/quant_tensor.h"
#include "core/tensor.h"

namespace qlora {

// Causal grouped-query attention over B rows of T queries. Keys and values hold Tk positions per
// row (0: Tk = T). Query t sits at absolute position q_offset + t and sees key s when s <= q_offset
// + t (KV-cache decoding: q_offset = positions already cached, Tk = q_offset + T).
struct AttentionShape {
  int64_t B = 1, T = 1, H = 1, Hkv = 1, D = 1;
  int64_t window = 0;    // > 0: also q_offset + t - s < window (Mistral's sliding window)
  int64_t Tk = 0;        // key positions per row; 0 = T
  int64_t q_offset = 0;  // absolute position of query 0
  int64_t keys() const { return Tk > 0 ? Tk : T; }
};

struct CrossEntropyResult {
  double loss_sum = 0;  // summed over rows with a target
  int64_t count = 0;    // rows with a target
};

// The f32 scalars of one AdamW step (torch's operation order; optim/adamw.cpp derives them).
struct AdamWScalars {
  float decay_mul, w1, b2, c2, bc2_sqrt, neg_step, eps;
};

// The f32 scalars of one 8-bit AdamW step (bitsandbytes' order; optim/adamw_8bit.cpp).
struct AdamW8bitScalars {
  float b1, one_minus_b1, b2, one_minus_b2, c2, eps, neg_step, eps_c2, step32, decay;
  bool apply_decay = false;
};

// The two dynamic maps of bitsandbytes' 8-bit optimizer state, as device arrays of 256 floats.
struct DynamicMaps {
  const float* signed_map = nullptr;    // m (state1)
  const float* unsigned_map = nullptr;  // v (state2)
};

// Rows of (V) logits alive at once in the fused LM head + cross-entropy: 256 x 49152 f32 (SmolLM2)
// is 48 MiB with its gradient.
inline constexpr int64_t kLossChunkRows = 256;

// Bytes per 8-bit optimizer block and the smallest tensor that gets 8-bit state (bitsandbytes).
inline constexpr int64_t kOptim8bitBlock = 256;
inline constexpr int64_t kOptim8bitMinElements = 4096;

using Stream = int;  // 0: the backend's default stream

// Backends are always owned by shared_ptr (make_cpu_backend, std::make_shared): every storage a
// backend allocates holds a reference to it, so no tensor outlives the backend that frees it.
class Backend : public std::enable_shared_from_this<Backend> {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;  // "cpu", ...
  // Whether bf16 compute runs on native bf16 units here, and so beats f32 (`compute_dtype: auto`).
  virtual bool native_bf16() const { return false; }
  // Called by the trainer before each step: a backend whose processor other programs share may
  // resize its work to what they leave free (the CPU backend: its thread count, threads.h).
  virtual void fit_to_load() {}

  // ---- memory --------------------------------------------------------------------------------
  // Zero-filled, 64-byte aligned; throws Error naming the size when the device is out of memory.
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* p, size_t bytes) = 0;
  virtual void memset(void* dst, int value, size_t bytes) = 0;
  virtual void copy_from_host(void* dst, const void* host_src, size_t bytes, Stream stream = 0) = 0;
  virtual void copy_to_host(void* host_dst, const void* src, size_t bytes, Stream stream = 0) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes, Stream stream = 0) = 0;  // device to device
  // Streams order work that may overlap (a paged optimizer's page copies beside the step).
  // The CPU backend runs everything in order on the calling thread: one stream, always synchronised.
  virtual Stream create_stream() { return 0; }
  virtual void synchronize(Stream stream = 0) {}

  // Tensor helpers on top of the above (not virtual).
  Tensor zeros(Shape shape, DType dtype);
  // `t` itself when already on this device, else a copy of it here.
  Tensor to_device(const Tensor& t);
  QuantTensor to_device(const QuantTensor& q);
  // `t` itself when the host can read it, else a host copy.
  Tensor to_host(const Tensor& t);
  // host_src's bytes into `dst` (same byte count), and the reverse.
  void upload(const Tensor& dst, const void* host_src);
  void download(void* host_dst, const Tensor& src);

  // ---- row-wise and element-wise ops of the Llama block ---------------------------------------
  // y (N, C) = x * rstd * weight, rstd (N) = 1 / sqrt(mean(x²) + eps) kept for the backward.
  virtual void rmsnorm_forward(const float* x, const float* weight, float* y, float* rstd, int64_t N, int64_t C,
                               double eps) = 0;
  virtual void rmsnorm_forward(const double* x, const double* weight, double* y, double* rstd, int64_t N, int64_t C,
                               double eps);
  // dx (N, C) +=; dweight (C) += (null: frozen norm).
  virtual void rmsnorm_backward(const float* dy, const float* x, const float* weight, const float* rstd, float* dx,
                                float* dweight, int64_t N, int64_t C) = 0;
  virtual void rmsnorm_backward(const double* dy, const double* x, const double* weight, const double* rstd,
                                double* dx, double* dweight, int64_t N, int64_t C);
  // HF rotate_half RoPE in place on x (N, H, D): pairs (i, i + D/2) rotated by positions[n] *
  // inv_freq[i], angles in f32 as transformers computes them. The backward rotates by -angle.
  virtual void rope_forward(float* x, const int64_t* positions, const float* inv_freq, int64_t N, int64_t H,
                            int64_t D) = 0;
  virtual void rope_forward(double* x, const int64_t* positions, const float* inv_freq, int64_t N, int64_t H,
                            int64_t D);
  virtual void rope_backward(float* dx, const int64_t* positions, const float* inv_freq, int64_t N, int64_t H,
                             int64_t D) = 0;
  virtual void rope_backward(double* dx, const int64_t* positions, const float* inv_freq, int64_t N, int64_t H,
                             int64_t D);
  // out (n) = silu(gate) * up; the backward writes dgate and dup.
  virtual void swiglu_forward(const float* gate, const float* up, float* out, int64_t n) = 0;
  virtual void swiglu_forward(const double* gate, const double* up, double* out, int64_t n);
  virtual void swiglu_backward(const float* dout, const float* gate, const float* up, float* dgate, float* dup,
                               int64_t n) = 0;
  virtual void swiglu_backward(const double* dout, const double* gate, const double* up, double* dgate, double* dup,
                               int64_t n);
  // out (N, C) = table[ids] (table (V, C): f32 or bf16; f64 for double); throws Error naming an
  // id outside [0, V). The backward scatters: dtable (V, C) += dout by ids.
  virtual void embedding_forward(const Tensor& table, const int32_t* ids, int64_t N, float* out) = 0;
  virtual void embedding_forward(const Tensor& table, const int32_t* ids, int64_t N, double* out);
  virtual void embedding_backward(const float* dout, const int32_t* ids, int64_t N, int64_t C, float* dtable) = 0;
  virtual void embedding_backward(const double* dout, const int32_t* ids, int64_t N, int64_t C, double* dtable);
  // ---- mixture of experts (Mixtral, Qwen3-MoE) -------------------------------------------------
  // Routing as transformers' MixtralTopKRouter and Qwen3MoeTopKRouter: probs (N, E) =
  // softmax(logits), idx (N, k) the k most probable experts (most probable first; ties to the lower
  // index), weights (N, k) their probabilities, divided by their sum when `renormalize`.
  virtual void moe_route_forward(const float* logits, int64_t N, int64_t E, int64_t k, bool renormalize, float* probs,
                                 int32_t* idx, float* weights) = 0;
  virtual void moe_route_forward(const double* logits, int64_t N, int64_t E, int64_t k, bool renormalize,
                                 double* probs, int32_t* idx, double* weights);
  // dlogits (N, E), written: the gradient through the renormalisation and the softmax of
  // dweights (N, k), plus dprobs (N, E) on the probabilities when given (the load-balancing loss).
  virtual void moe_route_backward(const float* probs, const int32_t* idx, const float* weights, const float* dweights,
                                  const float* dprobs, int64_t N, int64_t E, int64_t k, bool renormalize,
                                  float* dlogits) = 0;
  virtual void moe_route_backward(const double* probs, const int32_t* idx, const double* weights,
                                  const double* dweights, const double* dprobs, int64_t N, int64_t E, int64_t k,
                                  bool renormalize, double* dlogits);
  // dst (n, C) row i = src row rows[i], times scale[i] when scale is given.
  virtual void gather_rows(const float* src, const int32_t* rows, const float* scale, int64_t n, int64_t C,
                           float* dst) = 0;
  virtual void gather_rows(const double* src, const int32_t* rows, const double* scale, int64_t n, int64_t C,
                           double* dst);
  // dst row rows[i] += scale[i] * src row i (scale null: 1); rows may repeat.
  virtual void scatter_add_rows(const float* src, const int32_t* rows, const float* scale, int64_t n, int64_t C,
                                float* dst) = 0;
  virtual void scatter_add_rows(const double* src, const int32_t* rows, const double* scale, int64_t n, int64_t C,
                                double* dst);
  // out (n) = dot(a row rows[i], b row i) over C.
  virtual void gathered_row_dots(const float* a, const int32_t* rows, const float* b, int64_t n, int64_t C,
                                 float* out) = 0;
  virtual void gathered_row_dots(const double* a, const int32_t* rows, const double* b, int64_t n, int64_t C,
                                 double* out);
  // x (n) += y (n).
  virtual void add_inplace(float* x, const float* y, int64_t n) = 0;
  virtual void add_inplace(double* x, const double* y, int64_t n);
  // Rounds x (n) in place to the nearest bf16 (bf16 compute keeps activations where torch would).
  virtual void round_to_bf16(float* x, int64_t n) = 0;
  // dst (n) = bf16(src) (refreshing a bf16 compute copy from its f32 master).
  virtual void convert_f32_to_bf16(const float* src, uint16_t* dst, int64_t n) = 0;
  // dst (n) = src widened (any float dtype to f32 or f64), for device-side conversions.
  virtual void convert(const Tensor& src, const Tensor& dst) = 0;

  // ---- attention (flash style: the forward keeps out and lse; the backward recomputes P) --------
  // q (B, T, H, D), k and v (B, Tk, Hkv, D), out (B, T, H, D), lse (B, H, T) (may be null).
  // segment_ids (B, T) may be null; when given (Tk = T only), query t sees key s only if their
  // segment ids are equal and >= 0 (packed examples; padding is -1 and attends nothing).
  virtual void attention_forward(const float* q, const float* k, const float* v, const int32_t* segment_ids,
                                 float* out, float* lse, const AttentionShape& shape) = 0;
  virtual void attention_forward(const double* q, const double* k, const double* v, const int32_t* segment_ids,
                                 double* out, double* lse, const AttentionShape& shape);
  // dq (B, T, H, D), dk and dv (B, T, Hkv, D) written.
  virtual void attention_backward(const float* dout, const float* q, const float* k, const float* v,
                                  const float* out, const float* lse, const int32_t* segment_ids, float* dq, float* dk,
                                  float* dv, const AttentionShape& shape) = 0;
  virtual void attention_backward(const double* dout, const double* q, const double* k, const double* v,
                                  const double* out, const double* lse, const int32_t* segment_ids, double* dq,
                                  double* dk, double* dv, const AttentionShape& shape);

  // ---- fused LM head + cross-entropy, chunked over rows (never (N, V) logits) ---------------------
  // targets (N): the shifted labels, kIgnoreIndex = no loss. w (V, C) f32/bf16 (f64 for double).
  // Loss only: row_losses (N) may be null.
  virtual CrossEntropyResult cross_entropy_forward(const float* h, const Tensor& w, const int32_t* targets, int64_t N,
                                                   float* row_losses, int64_t chunk_rows) = 0;
  virtual CrossEntropyResult cross_entropy_forward(const double* h, const Tensor& w, const int32_t* targets,
                                                   int64_t N, double* row_losses, int64_t chunk_rows);
  // Loss and gradients: dh (N, C) written (ignored rows 0), dw (V, C) += (null: frozen head).
  virtual CrossEntropyResult cross_entropy_forward_backward(const float* h, const Tensor& w, const int32_t* targets,
                                                            int64_t N, float grad_scale, float* dh, float* dw,
                                                            int64_t chunk_rows) = 0;
  virtual CrossEntropyResult cross_entropy_forward_backward(const double* h, const Tensor& w, const int32_t* targets,
                                                            int64_t N, double grad_scale, double* dh, double* dw,
                                                            int64_t chunk_rows);

  // ---- dense matrix products (w (O, K) f32 or bf16 for float, f64 for double) ------------------
  // y (N, O) = x (N, K) · wᵀ.
  virtual void matmul_xwt(const float* x, const Tensor& w, float* y, int64_t N) = 0;
  virtual void matmul_xwt(const double* x, const Tensor& w, double* y, int64_t N);
  // dx (N, K) += dy (N, O) · w.
  virtual void matmul_dy_w_acc(const float* dy, const Tensor& w, float* dx, int64_t N) = 0;
  virtual void matmul_dy_w_acc(const double* dy, const Tensor& w, double* dx, int64_t N);
  // dw (O, K) += dyᵀ · x.
  virtual void matmul_dyt_x_acc(const float* dy, const float* x, float* dw, int64_t N, int64_t O, int64_t K) = 0;
  virtual void matmul_dyt_x_acc(const double* dy, const double* x, double* dw, int64_t N, int64_t O, int64_t K);
  // c (m, n) = alpha · op(a) · op(b) + beta · c, row-major, op = transpose when the flag is set.
  virtual void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                    int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) = 0;
  virtual void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
                    int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc);

  // ---- bf16 compute (what torch autocast runs): the activation operands rounded to bf16 (nearest
  // even), w bf16 (dense) or each 4-bit value code · absmax rounded to bf16 (bitsandbytes with
  // bnb_4bit_compute_dtype=bfloat16), exact products summed in f32. Contracts as their f32 twins.
  virtual void matmul_xwt_bf16(const float* x, const Tensor& w, float* y, int64_t N) = 0;
  virtual void matmul_dy_w_acc_bf16(const float* dy, const Tensor& w, float* dx, int64_t N) = 0;
  virtual void matmul_dyt_x_acc_bf16(const float* dy, const float* x, float* dw, int64_t N, int64_t O,
                                     int64_t K) = 0;
  virtual void qmatmul_forward_bf16(const float* x, const QuantTensor& w, float* y, int64_t N) = 0;
  virtual void qmatmul_dy_w_acc_bf16(const float* dy, const QuantTensor& w, float* dx, int64_t N) = 0;
  // The fused LM head + cross-entropy in bf16 compute (w (V, C) bf16): the products as above, and
  // the logits rounded to bf16 before the softmax (torch autocast's lm_head returns bf16 logits).
  virtual CrossEntropyResult cross_entropy_forward_bf16(const float* h, const Tensor& w, const int32_t* targets,
                                                        int64_t N, float* row_losses, int64_t chunk_rows) = 0;
  virtual CrossEntropyResult cross_entropy_forward_backward_bf16(const float* h, const Tensor& w,
                                                                 const int32_t* targets, int64_t N, float grad_scale,
                                                                 float* dh, float* dw, int64_t chunk_rows) = 0;

  // ---- frozen 4-bit weights (NF4/FP4, optionally double-quantized), never dequantized whole ----
  // y (N, O) = x · dequant(w)ᵀ (overwritten).
  virtual void qmatmul_forward(const float* x, const QuantTensor& w, float* y, int64_t N) = 0;
  virtual void qmatmul_forward(const double* x, const QuantTensor& w, double* y, int64_t N);
  // dx (N, K) += dy · dequant(w): the input gradient through a frozen weight.
  virtual void qmatmul_dy_w_acc(const float* dy, const QuantTensor& w, float* dx, int64_t N) = 0;
  virtual void qmatmul_dy_w_acc(const double* dy, const QuantTensor& w, double* dx, int64_t N);
  // out (numel) = dequant(w) in f32 (code · absmax computed in f32, as bitsandbytes).
  virtual void dequantize_4bit(const QuantTensor& w, float* out) = 0;

  // ---- the LoRA layer's element-wise pieces --------------------------------------------------
  // keep (N, K): 1 where an element survives dropout with probability 1 - p; row n draws from its
  // own stream seeded by (seed, n), so the mask does not depend on the thread count.
  virtual void dropout_mask(uint64_t seed, double p, int64_t N, int64_t K, uint8_t* keep) = 0;
  // out (n) = x ⊙ keep / (1 - p) (inverted dropout).
  virtual void dropout_apply(const float* x, const uint8_t* keep, double p, float* out, int64_t n) = 0;
  virtual void dropout_apply(const double* x, const uint8_t* keep, double p, double* out, int64_t n);
  // dx (n) += dy ⊙ keep / (1 - p) (the backward of dropout_apply, accumulated).
  virtual void dropout_backward_acc(const float* dy, const uint8_t* keep, double p, float* dx, int64_t n) = 0;
  virtual void dropout_backward_acc(const double* dy, const uint8_t* keep, double p, double* dx, int64_t n);
  // y (N, O) += bias (O) on every row; bias f32/bf16 (f64 for double).
  virtual void add_bias(const Tensor& bias, float* y, int64_t N, int64_t O) = 0;
  virtual void add_bias(const Tensor& bias, double* y, int64_t N, int64_t O);
  // out (O) += column sums of dy (N, O), accumulated in double over N.
  virtual void add_column_sums(const float* dy, float* out, int64_t N, int64_t O) = 0;
  virtual void add_column_sums(const double* dy, double* out, int64_t N, int64_t O);
  // w (O, K) = f32(base + scale · B·A) with the delta formed in f64: base is w itself (f32) or
  // base64 (O, K) when not null; A (R, K) and B (O, R) in f64. One rounding, so a merged weight
  // does not depend on the summation order of the device's GEMM.
  virtual void merge_lora(float* w, const double* base64, const double* A, const double* B, int64_t O, int64_t K,
                          int64_t R, double scale) = 0;

  // ---- optimizer steps on one page of state (f32 params and grads) -----------------------------
  // AdamW (torch's operation order) on n elements: p, m, v updated in place.
  virtual void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& k) = 0;
  // 8-bit AdamW (bitsandbytes' blockwise state): n elements starting at a block boundary; q1/q2
  // (n) u8 codes into the signed/unsigned dynamic maps, absmax1/absmax2 (ceil(n / 256)) f32.
  virtual void adamw8bit_step(float* p, const float* g, uint8_t* q1, uint8_t* q2, float* absmax1, float* absmax2,
                              int64_t n, const DynamicMaps& maps, const AdamW8bitScalars& k) = 0;
  // bitsandbytes' 32-bit update (tensors below kOptim8bitMinElements under 8-bit AdamW).
  virtual void adamw32bit_bnb_step(float* p, const float* g, float* m, float* v, int64_t n,
                                   const AdamW8bitScalars& k) = 0;

  // ---- reductions over gradients ---------------------------------------------------------------
  virtual double sum_squares(const float* x, int64_t n) = 0;  // accumulated in double
  virtual bool all_finite(const float* x, int64_t n) = 0;
  virtual void scale(float* x, int64_t n, float factor) = 0;

 protected:
  [[noreturn]] void no_f64(const char* op) const;
};

}  // namespace qlora
