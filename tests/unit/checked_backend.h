// CheckedBackend: a test backend that proves the engine touches memory only through the backend.
// Its "device" is an arena of host pages kept PROT_NONE except while one of its own calls runs,
// so any dereference of device memory outside the backend (a host loop over a parameter, a
// memcpy of an activation) is a SIGSEGV. Every call is counted by name, and every pointer and
// Tensor argument must lie in the arena (a device tag check): a host pointer handed to a kernel is
// an Error naming the op and the argument. The kernels themselves are the CPU backend's, so
// results must equal a CpuBackend run bit for bit.
// Used by tests/unit/test_backend_seam.cpp.
#pragma once
#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace qlora::test {

class CheckedBackend final : public CpuBackend {
 public:
  explicit CheckedBackend(size_t arena_bytes = size_t(4) << 30) : size_(arena_bytes) {
    void* p = ::mmap(nullptr, size_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) fail("checked", "cannot reserve a {} byte arena", size_);
    base_ = static_cast<char*>(p);
  }
  ~CheckedBackend() override { ::munmap(base_, size_); }

  Device device() const override { return {DeviceKind::Emulated, 0}; }
  std::string name() const override { return "checked"; }

  // Calls per op name since construction (or the last reset_counts()).
  const std::map<std::string, int64_t>& calls() const { return calls_; }
  int64_t calls(const std::string& op) const {
    auto it = calls_.find(op);
    return it == calls_.end() ? 0 : it->second;
  }
  void reset_counts() { calls_.clear(); }
  bool in_arena(const void* p) const {
    const char* c = static_cast<const char*>(p);
    return c >= base_ && c < base_ + used_;
  }

  // ---- memory: a bump allocator over the arena (fresh pages are zero; nothing is reused) ----
  void* allocate(size_t bytes) override {
    const size_t rounded = (bytes + 63) / 64 * 64;
    if (rounded == 0) return nullptr;
    if (used_ + rounded > size_) fail("checked", "arena of {} bytes exhausted", size_);
    void* p = base_ + used_;
    used_ += rounded;
    ++calls_["allocate"];
    return p;
  }
  void deallocate(void*, size_t) override { ++calls_["deallocate"]; }
  void memset(void* dst, int value, size_t bytes) override {
    Guard g(*this, "memset", {dst});
    CpuBackend::memset(dst, value, bytes);
  }
  void copy_from_host(void* dst, const void* host_src, size_t bytes, Stream s = 0) override {
    Guard g(*this, "copy_from_host", {dst});
    CpuBackend::copy_from_host(dst, host_src, bytes, s);
  }
  void copy_to_host(void* host_dst, const void* src, size_t bytes, Stream s = 0) override {
    Guard g(*this, "copy_to_host", {src});
    CpuBackend::copy_to_host(host_dst, src, bytes, s);
  }
  void copy(void* dst, const void* src, size_t bytes, Stream s = 0) override {
    Guard g(*this, "copy", {dst, src});
    CpuBackend::copy(dst, src, bytes, s);
  }

  // ---- kernels: count, check every argument is device memory, run the CPU kernel ----
#define QLORA_CHECKED_KERNELS(T)                                                                                    \
  void rmsnorm_forward(const T* x, const T* w, T* y, T* r, int64_t N, int64_t C, double eps) override {             \
    Guard g(*this, "rmsnorm_forward", {x, w, y, r});                                                                \
    CpuBackend::rmsnorm_forward(x, w, y, r, N, C, eps);                                                             \
  }                                                                                                                 \
  void rmsnorm_backward(const T* dy, const T* x, const T* w, const T* r, T* dx, T* dw, int64_t N, int64_t C)       \
      override {                                                                                                    \
    Guard g(*this, "rmsnorm_backward", {dy, x, w, r, dx, dw});                                                      \
    CpuBackend::rmsnorm_backward(dy, x, w, r, dx, dw, N, C);                                                        \
  }                                                                                                                 \
  void rope_forward(T* x, const int64_t* pos, const float* f, int64_t N, int64_t H, int64_t D) override {           \
    Guard g(*this, "rope_forward", {x, pos, f});                                                                    \
    CpuBackend::rope_forward(x, pos, f, N, H, D);                                                                   \
  }                                                                                                                 \
  void rope_backward(T* x, const int64_t* pos, const float* f, int64_t N, int64_t H, int64_t D) override {          \
    Guard g(*this, "rope_backward", {x, pos, f});                                                                   \
    CpuBackend::rope_backward(x, pos, f, N, H, D);                                                                  \
  }                                                                                                                 \
  void swiglu_forward(const T* a, const T* b, T* out, int64_t n) override {                                         \
    Guard g(*this, "swiglu_forward", {a, b, out});                                                                  \
    CpuBackend::swiglu_forward(a, b, out, n);                                                                       \
  }                                                                                                                 \
  void swiglu_backward(const T* d, const T* a, const T* b, T* da, T* db, int64_t n) override {                      \
    Guard g(*this, "swiglu_backward", {d, a, b, da, db});                                                           \
    CpuBackend::swiglu_backward(d, a, b, da, db, n);                                                                \
  }                                                                                                                 \
  void embedding_forward(const Tensor& table, const int32_t* ids, int64_t N, T* out) override {                     \
    Guard g(*this, "embedding_forward", {ids, out}, {&table});                                                      \
    CpuBackend::embedding_forward(table, ids, N, out);                                                              \
  }                                                                                                                 \
  void embedding_backward(const T* d, const int32_t* ids, int64_t N, int64_t C, T* dt) override {                  \
    Guard g(*this, "embedding_backward", {d, ids, dt});                                                             \
    CpuBackend::embedding_backward(d, ids, N, C, dt);                                                               \
  }                                                                                                                 \
  void add_inplace(T* x, const T* y, int64_t n) override {                                                          \
    Guard g(*this, "add_inplace", {x, y});                                                                          \
    CpuBackend::add_inplace(x, y, n);                                                                               \
  }                                                                                                                 \
  void moe_route_forward(const T* l, int64_t N, int64_t E, int64_t k, bool r, T* p, int32_t* i, T* w) override {      \
    Guard g(*this, "moe_route_forward", {l, p, i, w});                                                              \
    CpuBackend::moe_route_forward(l, N, E, k, r, p, i, w);                                                             \
  }                                                                                                                 \
  void moe_route_backward(const T* p, const int32_t* i, const T* w, const T* dw, const T* dp, int64_t N, int64_t E, \
                          int64_t k, bool r, T* dl) override {                                                        \
    Guard g(*this, "moe_route_backward", {p, i, w, dw, dp, dl});                                                    \
    CpuBackend::moe_route_backward(p, i, w, dw, dp, N, E, k, r, dl);                                                   \
  }                                                                                                                 \
  void gather_rows(const T* s, const int32_t* r, const T* sc, int64_t n, int64_t C, T* d) override {               \
    Guard g(*this, "gather_rows", {s, r, sc, d});                                                                   \
    CpuBackend::gather_rows(s, r, sc, n, C, d);                                                                     \
  }                                                                                                                 \
  void scatter_add_rows(const T* s, const int32_t* r, const T* sc, int64_t n, int64_t C, T* d) override {          \
    Guard g(*this, "scatter_add_rows", {s, r, sc, d});                                                              \
    CpuBackend::scatter_add_rows(s, r, sc, n, C, d);                                                                \
  }                                                                                                                 \
  void gathered_row_dots(const T* a, const int32_t* r, const T* b, int64_t n, int64_t C, T* o) override {          \
    Guard g(*this, "gathered_row_dots", {a, r, b, o});                                                              \
    CpuBackend::gathered_row_dots(a, r, b, n, C, o);                                                                \
  }                                                                                                                 \
  void attention_forward(const T* q, const T* k, const T* v, const int32_t* seg, T* out, T* lse,                   \
                         const AttentionShape& s) override {                                                        \
    Guard g(*this, "attention_forward", {q, k, v, seg, out, lse});                                                  \
    CpuBackend::attention_forward(q, k, v, seg, out, lse, s);                                                       \
  }                                                                                                                 \
  void attention_backward(const T* d, const T* q, const T* k, const T* v, const T* o, const T* lse,                \
                          const int32_t* seg, T* dq, T* dk, T* dv, const AttentionShape& s) override {              \
    Guard g(*this, "attention_backward", {d, q, k, v, o, lse, seg, dq, dk, dv});                                    \
    CpuBackend::attention_backward(d, q, k, v, o, lse, seg, dq, dk, dv, s);                                         \
  }                                                                                                                 \
  CrossEntropyResult cross_entropy_forward(const T* h, const Tensor& w, const int32_t* t, int64_t N, T* rl,        \
                                           int64_t chunk) override {                                                \
    Guard g(*this, "cross_entropy_forward", {h, t, rl}, {&w});                                                      \
    return CpuBackend::cross_entropy_forward(h, w, t, N, rl, chunk);                                                \
  }                                                                                                                 \
  CrossEntropyResult cross_entropy_forward_backward(const T* h, const Tensor& w, const int32_t* t, int64_t N,      \
                                                    T scale, T* dh, T* dw, int64_t chunk) override {                \
    Guard g(*this, "cross_entropy_forward_backward", {h, t, dh, dw}, {&w});                                         \
    return CpuBackend::cross_entropy_forward_backward(h, w, t, N, scale, dh, dw, chunk);                            \
  }                                                                                                                 \
  void matmul_xwt(const T* x, const Tensor& w, T* y, int64_t N) override {                                          \
    Guard g(*this, "matmul_xwt", {x, y}, {&w});                                                                     \
    CpuBackend::matmul_xwt(x, w, y, N);                                                                             \
  }                                                                                                                 \
  void matmul_dy_w_acc(const T* dy, const Tensor& w, T* dx, int64_t N) override {                                   \
    Guard g(*this, "matmul_dy_w_acc", {dy, dx}, {&w});                                                              \
    CpuBackend::matmul_dy_w_acc(dy, w, dx, N);                                                                      \
  }                                                                                                                 \
  void matmul_dyt_x_acc(const T* dy, const T* x, T* dw, int64_t N, int64_t O, int64_t K) override {                 \
    Guard g(*this, "matmul_dyt_x_acc", {dy, x, dw});                                                                \
    CpuBackend::matmul_dyt_x_acc(dy, x, dw, N, O, K);                                                               \
  }                                                                                                                 \
  void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,        \
            int64_t ldb, T beta, T* c, int64_t ldc) override {                                                      \
    Guard g(*this, "gemm", {a, b, c});                                                                              \
    CpuBackend::gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);                                         \
  }                                                                                                                 \
  void qmatmul_forward(const T* x, const QuantTensor& w, T* y, int64_t N) override {                                \
    Guard g(*this, "qmatmul_forward", {x, y}, quant_parts(w));                                                      \
    CpuBackend::qmatmul_forward(x, host_view(w), y, N);                                                                        \
  }                                                                                                                 \
  void qmatmul_dy_w_acc(const T* dy, const QuantTensor& w, T* dx, int64_t N) override {                             \
    Guard g(*this, "qmatmul_dy_w_acc", {dy, dx}, quant_parts(w));                                                   \
    CpuBackend::qmatmul_dy_w_acc(dy, host_view(w), dx, N);                                                                     \
  }                                                                                                                 \
  void dropout_apply(const T* x, const uint8_t* keep, double p, T* out, int64_t n) override {                       \
    Guard g(*this, "dropout_apply", {x, keep, out});                                                                \
    CpuBackend::dropout_apply(x, keep, p, out, n);                                                                  \
  }                                                                                                                 \
  void dropout_backward_acc(const T* dy, const uint8_t* keep, double p, T* dx, int64_t n) override {                \
    Guard g(*this, "dropout_backward_acc", {dy, keep, dx});                                                         \
    CpuBackend::dropout_backward_acc(dy, keep, p, dx, n);                                                           \
  }                                                                                                                 \
  void add_bias(const Tensor& bias, T* y, int64_t N, int64_t O) override {                                          \
    Guard g(*this, "add_bias", {y}, {&bias});                                                                       \
    CpuBackend::add_bias(bias, y, N, O);                                                                            \
  }                                                                                                                 \
  void add_column_sums(const T* dy, T* out, int64_t N, int64_t O) override {                                        \
    Guard g(*this, "add_column_sums", {dy, out});                                                                   \
    CpuBackend::add_column_sums(dy, out, N, O);                                                                     \
  }
  QLORA_CHECKED_KERNELS(float)
  QLORA_CHECKED_KERNELS(double)
#undef QLORA_CHECKED_KERNELS

  void matmul_xwt_bf16(const float* x, const Tensor& w, float* y, int64_t N) override {
    Guard g(*this, "matmul_xwt_bf16", {x, y}, {&w});
    CpuBackend::matmul_xwt_bf16(x, w, y, N);
  }
  void matmul_dy_w_acc_bf16(const float* dy, const Tensor& w, float* dx, int64_t N) override {
    Guard g(*this, "matmul_dy_w_acc_bf16", {dy, dx}, {&w});
    CpuBackend::matmul_dy_w_acc_bf16(dy, w, dx, N);
  }
  void matmul_dyt_x_acc_bf16(const float* dy, const float* x, float* dw, int64_t N, int64_t O, int64_t K) override {
    Guard g(*this, "matmul_dyt_x_acc_bf16", {dy, x, dw});
    CpuBackend::matmul_dyt_x_acc_bf16(dy, x, dw, N, O, K);
  }
  void qmatmul_forward_bf16(const float* x, const QuantTensor& w, float* y, int64_t N) override {
    Guard g(*this, "qmatmul_forward_bf16", {x, y}, quant_parts(w));
    CpuBackend::qmatmul_forward_bf16(x, host_view(w), y, N);
  }
  void qmatmul_dy_w_acc_bf16(const float* dy, const QuantTensor& w, float* dx, int64_t N) override {
    Guard g(*this, "qmatmul_dy_w_acc_bf16", {dy, dx}, quant_parts(w));
    CpuBackend::qmatmul_dy_w_acc_bf16(dy, host_view(w), dx, N);
  }
  CrossEntropyResult cross_entropy_forward_bf16(const float* h, const Tensor& w, const int32_t* t, int64_t N,
                                                float* rl, int64_t chunk) override {
    Guard g(*this, "cross_entropy_forward_bf16", {h, t, rl}, {&w});
    return CpuBackend::cross_entropy_forward_bf16(h, w, t, N, rl, chunk);
  }
  CrossEntropyResult cross_entropy_forward_backward_bf16(const float* h, const Tensor& w, const int32_t* t, int64_t N,
                                                         float scale, float* dh, float* dw, int64_t chunk) override {
    Guard g(*this, "cross_entropy_forward_backward_bf16", {h, t, dh, dw}, {&w});
    return CpuBackend::cross_entropy_forward_backward_bf16(h, w, t, N, scale, dh, dw, chunk);
  }
  void round_to_bf16(float* x, int64_t n) override {
    Guard g(*this, "round_to_bf16", {x});
    CpuBackend::round_to_bf16(x, n);
  }
  void convert_f32_to_bf16(const float* src, uint16_t* dst, int64_t n) override {
    Guard g(*this, "convert_f32_to_bf16", {src, dst});
    CpuBackend::convert_f32_to_bf16(src, dst, n);
  }
  void convert(const Tensor& src, const Tensor& dst) override {
    Guard g(*this, "convert", {}, {&src, &dst});
    // The CPU version converts through host tensors; here that is device memory, unprotected.
    const Tensor converted = Tensor(src.shape(), src.dtype(), Storage::borrow(src.raw(), src.nbytes(), nullptr))
                                 .to(dst.dtype());
    std::memcpy(dst.raw(), converted.raw(), dst.nbytes());
  }
  void dequantize_4bit(const QuantTensor& w, float* out) override {
    Guard g(*this, "dequantize_4bit", {out}, quant_parts(w));
    CpuBackend::dequantize_4bit(host_view(w), out);
  }
  void dropout_mask(uint64_t seed, double p, int64_t N, int64_t K, uint8_t* keep) override {
    Guard g(*this, "dropout_mask", {keep});
    CpuBackend::dropout_mask(seed, p, N, K, keep);
  }
  void merge_lora(float* w, const double* base64, const double* A, const double* B, int64_t O, int64_t K, int64_t R,
                  double scale) override {
    Guard g(*this, "merge_lora", {w, base64, A, B});
    CpuBackend::merge_lora(w, base64, A, B, O, K, R, scale);
  }
  void adamw_step(float* p, const float* gr, float* m, float* v, int64_t n, const AdamWScalars& k) override {
    Guard g(*this, "adamw_step", {p, gr, m, v});
    CpuBackend::adamw_step(p, gr, m, v, n, k);
  }
  void adamw8bit_step(float* p, const float* gr, uint8_t* q1, uint8_t* q2, float* a1, float* a2, int64_t n,
                      const DynamicMaps& maps, const AdamW8bitScalars& k) override {
    Guard g(*this, "adamw8bit_step", {p, gr, q1, q2, a1, a2, maps.signed_map, maps.unsigned_map});
    CpuBackend::adamw8bit_step(p, gr, q1, q2, a1, a2, n, maps, k);
  }
  void adamw32bit_bnb_step(float* p, const float* gr, float* m, float* v, int64_t n,
                           const AdamW8bitScalars& k) override {
    Guard g(*this, "adamw32bit_bnb_step", {p, gr, m, v});
    CpuBackend::adamw32bit_bnb_step(p, gr, m, v, n, k);
  }
  double sum_squares(const float* x, int64_t n) override {
    Guard g(*this, "sum_squares", {x});
    return CpuBackend::sum_squares(x, n);
  }
  bool all_finite(const float* x, int64_t n) override {
    Guard g(*this, "all_finite", {x});
    return CpuBackend::all_finite(x, n);
  }
  void scale(float* x, int64_t n, float factor) override {
    Guard g(*this, "scale", {x});
    CpuBackend::scale(x, n, factor);
  }

 private:
  // One backend call: counts it, checks its arguments, and opens the arena for its duration.
  class Guard {
   public:
    Guard(CheckedBackend& be, const char* op, std::initializer_list<const void*> pointers,
          const std::vector<const Tensor*>& tensors = {})
        : be_(be) {
      ++be.calls_[op];
      int i = 0;
      for (const void* p : pointers) {
        ++i;
        if (p && !be.in_arena(p)) fail("checked", "{}: pointer argument {} is not device memory (a host pointer)", op, i);
      }
      for (const Tensor* t : tensors)
        if (t->defined() && (t->device() != be.device() || !be.in_arena(t->raw())))
          fail("checked", "{}: tensor {} is not on {}", op, t->describe(), be.device().name());
      if (be.depth_++ == 0) be.protect(PROT_READ | PROT_WRITE);
    }
    ~Guard() {
      if (--be_.depth_ == 0) be_.protect(PROT_NONE);
    }

   private:
    CheckedBackend& be_;
  };

  static std::vector<const Tensor*> quant_parts(const QuantTensor& w) {
    return {&w.codes, &w.code, &w.absmax, &w.absmax_codes, &w.nested_absmax, &w.nested_code};
  }
  // The CPU kernels insist on host tensors; inside a call the arena is readable, so present its
  // parts as borrowed host memory.
  static QuantTensor host_view(const QuantTensor& w) {
    QuantTensor h = w;
    for (Tensor* t : {&h.codes, &h.code, &h.absmax, &h.absmax_codes, &h.nested_absmax, &h.nested_code})
      if (t->defined()) *t = Tensor(t->shape(), t->dtype(), Storage::borrow(t->raw(), t->nbytes(), nullptr));
    return h;
  }

  void protect(int prot) {
    const size_t page = 4096, bytes = (used_ + page - 1) / page * page;
    if (bytes && ::mprotect(base_, bytes, prot) != 0) fail("checked", "mprotect failed");
  }

  char* base_ = nullptr;
  size_t size_ = 0, used_ = 0;
  int depth_ = 0;
  std::map<std::string, int64_t> calls_;
};

}  // namespace qlora::test
