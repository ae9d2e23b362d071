// The training engine's linear layer: base product (dense f32/bf16/f64 through cpu::linear_train,
// or frozen 4-bit through qmatmul / tile-wise dequantization), bias, LoRA adapter with inverted
// dropout, full fine-tuning gradients, and the merge W0 + scale·B·A.
// Legend: M rows (B*T tokens), K = in features, N = out features, R rank.
// Tested in tests/grad/test_lora_grads.cpp (finite differences in double, every base kind) and
// tests/unit/test_lora.cpp (PEFT init statistics, dropout, float vs double, 4-bit vs dense, merge).
#include "lora/lora_linear.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <string_view>
#include <type_traits>
#include <vector>

#include "backend/cpu/linear_train.h"
#include "core/error.h"
#include "core/rng.h"
#include "quant/codebooks.h"
#include "quant/nf4.h"
#include "quant/qmatmul.h"

namespace qlora {

namespace {

// Rows of a 4-bit weight dequantized at a time on the double path and in merged_weight: 64 x K
// doubles (2 MiB at K = 4096) stays in L2/L3 between the dequantization and the dgemm reading it.
constexpr int64_t kQuantTileRows = 64;
// Rows of dy per qmatmul_backward_input call on the float 4-bit path. qmatmul overwrites its output,
// so each chunk goes through a temporary (rows, K) buffer that is then added to dx; chunking bounds
// that buffer (2048 x 4096 f32 = 32 MiB) while keeping each call large enough that qmatmul's
// dequantization of W (once per call) stays small next to its 2·rows·N·K flops.
constexpr int64_t kQuantBackwardRows = 2048;
// Elements above which element-wise loops run in parallel (below it the fork costs more).
constexpr int64_t kParallelMin = 65536;

template <typename T>
constexpr DType kDType = std::is_same_v<T, double> ? DType::F64 : DType::F32;

// ---- seeds ----

// FNV-1a 64: a stable hash of a module name (std::hash differs between standard libraries).
uint64_t fnv1a(std::string_view s, uint64_t h = 0xcbf29ce484222325ull) {
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// A's stream: the config seed and the module name only, so adding or removing other targets
// changes no module's initial A.
uint64_t init_seed(uint64_t seed, const std::string& name) { return mix64(fnv1a(name) ^ mix64(seed)); }

// The dropout stream of one module in one call: distinct per module (PEFT has one nn.Dropout per
// adapted module, so q/k/v reading the same x get independent masks) even if the caller passes the
// same dropout_seed to all of them.
uint64_t module_dropout_seed(uint64_t dropout_seed, const std::string& name) {
  return mix64(dropout_seed ^ fnv1a(name, 0x84222325cbf29ce4ull));
}

// ---- dropout ----

// keep (M, K): 1 where the element is kept. Row m draws from its own Rng(mix64(seed + m·stride)), so
// the mask depends only on (seed, m, k), not on the thread count. Each 64-bit draw gives two 32-bit
// uniforms u; an element is kept when u >= round(p·2³²), i.e. with probability 1 - p (to 2⁻³²).
std::vector<uint8_t> dropout_keep(uint64_t seed, double p, int64_t M, int64_t K) {
  const double t = std::min(std::round(p * 4294967296.0), 4294967295.0);
  const uint32_t threshold = uint32_t(t);
  std::vector<uint8_t> keep(size_t(M * K));
#pragma omp parallel for if (M * K > kParallelMin) schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    Rng rng(mix64(seed + uint64_t(m) * 0xd1b54a32d192ed03ull));
    uint8_t* row = keep.data() + m * K;
    int64_t k = 0;
    for (; k + 1 < K; k += 2) {
      const uint64_t u = rng.next_u64();
      row[k] = uint32_t(u) >= threshold;
      row[k + 1] = uint32_t(u >> 32) >= threshold;
    }
    if (k < K) row[k] = uint32_t(rng.next_u64()) >= threshold;
  }
  return keep;
}

// out (M, K) = x ⊙ keep / (1 - p) (inverted dropout: the expectation of out is x).
template <typename T>
void apply_keep(const T* x, const std::vector<uint8_t>& keep, double p, T* out, int64_t n) {
  const T inv_keep = T(1.0 / (1.0 - p));
#pragma omp parallel for if (n > kParallelMin) schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = keep[size_t(i)] ? x[i] * inv_keep : T(0);
}

// ---- 4-bit rows in double ----

// Rows of a QuantTensor (N, K) dequantized into doubles. The value of an element is the f32 product
// code · absmax that dequantize_4bit computes, widened, so the double path sees exactly the weight
// the f32 path sees. Holds only the per-block absmax (numel / block_size floats), never W.
class QuantRows {
 public:
  explicit QuantRows(const QuantTensor& q) : q_(q), absmax_(block_absmax(q)), code_(code_4bit(q.type)) {}

  // out (rows, K) = dequant(w[n0 : n0 + rows, :]).
  void get(int64_t n0, int64_t rows, double* out) const {
    const int64_t K = q_.shape[1], begin = n0 * K, count = rows * K, bs = q_.block_size;
    const uint8_t* codes = q_.codes.data();
#pragma omp parallel for if (count > kParallelMin) schedule(static)
    for (int64_t j = 0; j < count; ++j) {
      const int64_t i = begin + j;
      const uint8_t byte = codes[i >> 1];
      const uint8_t c = (i & 1) ? uint8_t(byte & 0x0f) : uint8_t(byte >> 4);
      out[j] = double(code_[c] * absmax_[size_t(i / bs)]);
    }
  }

 private:
  const QuantTensor& q_;
  std::vector<float> absmax_;
  const std::array<float, 16>& code_;
};

// ---- argument checks (bad input: Error naming the module and the tensor) ----

const char* t_name(DType d) { return d == DType::F64 ? "f64" : "f32"; }

template <typename T>
void check_linear(const Linear& l, const char* op) {
  if (l.in <= 0 || l.out <= 0)
    fail("linear", "{} '{}': in and out features must be > 0; got in {}, out {}", op, l.name, l.in, l.out);
  const Shape nk = {l.out, l.in};
  const char* x_name = t_name(kDType<T>);
  if (l.quantized()) {
    if (l.qweight->shape != nk)
      fail("linear", "{} '{}': 4-bit weight is {}; expected (N, K) = {}", op, l.name, shape_str(l.qweight->shape),
           shape_str(nk));
    if (l.weight.defined())
      fail("linear", "{} '{}': has both a dense and a 4-bit weight; expected one base", op, l.name);
  } else {
    if (!l.weight.defined()) fail("linear", "{} '{}': no base weight (neither dense nor 4-bit)", op, l.name);
    if (l.weight.shape() != nk)
      fail("linear", "{} '{}': weight is {}; expected (N, K) = {}", op, l.name, l.weight.describe(), shape_str(nk));
    const DType wd = l.weight.dtype();
    const bool ok = std::is_same_v<T, double> ? wd == DType::F64 : (wd == DType::F32 || wd == DType::BF16);
    if (!ok)
      fail("linear", "{} '{}': x is {} but the weight is {}; expected {}", op, l.name, x_name, dtype_name(wd),
           std::is_same_v<T, double> ? "f64 (the double path is for finite-difference checks)" : "f32 or bf16");
  }
  if (l.bias.defined()) {
    if (l.bias.shape() != Shape{l.out})
      fail("linear", "{} '{}': bias is {}; expected ({})", op, l.name, l.bias.describe(), l.out);
    const DType bd = l.bias.dtype();
    const bool ok = std::is_same_v<T, double> ? bd == DType::F64 : (bd == DType::F32 || bd == DType::BF16);
    if (!ok)
      fail("linear", "{} '{}': x is {} but the bias is {}; expected {}", op, l.name, x_name, dtype_name(bd),
           std::is_same_v<T, double> ? "f64" : "f32 or bf16");
  }
  if (l.lora) {
    const LoraAdapter& a = *l.lora;
    if (a.A.ndim() != 2 || a.A.dim(0) < 1 || a.A.dim(1) != l.in)
      fail("linear", "{} '{}': lora A is {}; expected (R, K) with K = {}", op, l.name, a.A.describe(), l.in);
    const int64_t R = a.A.dim(0);
    if (a.B.shape() != Shape{l.out, R})
      fail("linear", "{} '{}': lora B is {}; expected (N, R) = ({}, {})", op, l.name, a.B.describe(), l.out, R);
    if (a.A.dtype() != kDType<T> || a.B.dtype() != kDType<T>)
      fail("linear", "{} '{}': x is {} but lora A is {} and B is {}; attach_lora with dtype {}", op, l.name, x_name,
           dtype_name(a.A.dtype()), dtype_name(a.B.dtype()), x_name);
    if (!(a.dropout >= 0.0 && a.dropout < 1.0))
      fail("linear", "{} '{}': lora dropout {} outside [0, 1)", op, l.name, a.dropout);
  }
}

// A gradient buffer: defined, with `shape` and the dtype of T.
template <typename T>
void check_grad(const Tensor& g, const Shape& shape, const Linear& l, const char* what) {
  if (!g.defined())
    fail("linear", "linear_backward '{}': {} is undefined; allocate {} {} (zeros) before the backward", l.name, what,
         t_name(kDType<T>), shape_str(shape));
  if (g.shape() != shape || g.dtype() != kDType<T>)
    fail("linear", "linear_backward '{}': {} is {}; expected {} {}", l.name, what, g.describe(), t_name(kDType<T>),
         shape_str(shape));
}

// ---- base products ----

template <typename T>
void add_bias(const Tensor& bias, T* y, int64_t M, int64_t N) {
  std::vector<T> b(static_cast<size_t>(N));
  switch (bias.dtype()) {
    case DType::F32: std::copy_n(bias.data<float>(), N, b.begin()); break;
    case DType::BF16:
      for (int64_t n = 0; n < N; ++n) b[size_t(n)] = T(bf16_to_f32(bias.data<uint16_t>()[n]));
      break;
    case DType::F64: std::copy_n(bias.data<double>(), N, b.begin()); break;
    default: QLORA_ASSERT(false, "bias dtype {} passed check_linear", dtype_name(bias.dtype()));
  }
#pragma omp parallel for if (M * N > kParallelMin) schedule(static)
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) y[m * N + n] += b[size_t(n)];
}

// y (M, N) = x · W0ᵀ (overwritten).
template <typename T>
void base_forward(const Linear& l, const T* x, T* y, int64_t M) {
  if (!l.quantized()) return cpu::matmul_xwt<T>(x, l.weight, y, M);
  if constexpr (std::is_same_v<T, float>) {
    qmatmul_forward(x, *l.qweight, y, M);
  } else {
    const int64_t N = l.out, K = l.in;
    const QuantRows rows(*l.qweight);
    std::vector<double> tile(size_t(std::min(kQuantTileRows, N) * K));
    for (int64_t n0 = 0; n0 < N; n0 += kQuantTileRows) {
      const int64_t nr = std::min(kQuantTileRows, N - n0);
      rows.get(n0, nr, tile.data());
      // Columns [n0, n0 + nr) of y: leading dimension N.
      cpu::gemm<double>(false, true, M, nr, K, 1.0, x, K, tile.data(), K, 0.0, y + n0, N);
    }
  }
}

// dx (M, K) += dy · W0.
template <typename T>
void base_backward_input(const Linear& l, const T* dy, T* dx, int64_t M) {
  if (!l.quantized()) return cpu::matmul_dy_w_acc<T>(dy, l.weight, dx, M);
  const int64_t N = l.out, K = l.in;
  if constexpr (std::is_same_v<T, float>) {
    // qmatmul_backward_input overwrites: go through a temporary and add.
    std::vector<float> tmp(size_t(std::min(kQuantBackwardRows, M) * K));
    for (int64_t m0 = 0; m0 < M; m0 += kQuantBackwardRows) {
      const int64_t mr = std::min(kQuantBackwardRows, M - m0);
      qmatmul_backward_input(dy + m0 * N, *l.qweight, tmp.data(), mr);
      float* d = dx + m0 * K;
      const int64_t n = mr * K;
#pragma omp parallel for if (n > kParallelMin) schedule(static)
      for (int64_t i = 0; i < n; ++i) d[i] += tmp[size_t(i)];
    }
  } else {
    const QuantRows rows(*l.qweight);
    std::vector<double> tile(size_t(std::min(kQuantTileRows, N) * K));
    for (int64_t n0 = 0; n0 < N; n0 += kQuantTileRows) {
      const int64_t nr = std::min(kQuantTileRows, N - n0);
      rows.get(n0, nr, tile.data());
      // dx += dy[:, n0:n0+nr] · W0[n0:n0+nr, :]: a sum over tiles of W0's rows.
      cpu::gemm<double>(false, false, M, K, nr, 1.0, dy + n0, N, tile.data(), K, 1.0, dx, K);
    }
  }
}

// out (N) += column sums of dy (M, N), accumulated in double over M (thousands of rows).
template <typename T>
void add_column_sums(const T* dy, T* out, int64_t M, int64_t N) {
  constexpr int64_t kCols = 256;
#pragma omp parallel for if (M * N > kParallelMin) schedule(static)
  for (int64_t n0 = 0; n0 < N; n0 += kCols) {
    const int64_t nc = std::min(kCols, N - n0);
    double acc[kCols] = {};
    for (int64_t m = 0; m < M; ++m) {
      const T* row = dy + m * N + n0;
      for (int64_t j = 0; j < nc; ++j) acc[j] += row[j];
    }
    for (int64_t j = 0; j < nc; ++j) out[n0 + j] += T(acc[j]);
  }
}

}  // namespace

void attach_lora(Linear& linear, const LoraConfig& config, DType dtype) {
  config.validate();
  if (dtype != DType::F32 && dtype != DType::F64)
    fail("lora", "attach_lora '{}': adapter dtype {} not supported; expected f32 or f64", linear.name,
         dtype_name(dtype));
  if (linear.in <= 0 || linear.out <= 0)
    fail("lora", "attach_lora '{}': in and out features must be > 0; got in {}, out {}", linear.name, linear.in,
         linear.out);
  const int64_t R = config.r, K = linear.in, N = linear.out;
  auto a = std::make_unique<LoraAdapter>();
  a->A = Tensor::zeros({R, K}, dtype);
  a->B = Tensor::zeros({N, R}, dtype);  // B = 0: the adapted model starts equal to the base model
  a->grad_A = Tensor::zeros({R, K}, dtype);
  a->grad_B = Tensor::zeros({N, R}, dtype);
  a->scale = config.scale();
  a->dropout = config.lora_dropout;
  // PEFT reset_lora_parameters: nn.init.kaiming_uniform_(A, a=√5). With fan_in = K the gain is
  // √(2 / (1 + 5)) and the bound gain·√(3 / K) = 1/√K. Drawn in double (53-bit uniforms), then
  // stored, so the f32 adapter is the f64 one rounded.
  const double bound = 1.0 / std::sqrt(double(K));
  Rng rng(init_seed(config.seed, linear.name));
  for (int64_t i = 0; i < R * K; ++i) {
    const double u = double(rng.next_u64() >> 11) * 0x1.0p-53;  // [0, 1)
    const double v = (2.0 * u - 1.0) * bound;
    if (dtype == DType::F64)
      a->A.data<double>()[i] = v;
    else
      a->A.data<float>()[i] = float(v);
  }
  linear.lora = std::move(a);
}

template <typename T>
void linear_forward(const Linear& linear, const T* x, T* y, int64_t M, bool training, uint64_t dropout_seed,
                    LinearSaved* saved) {
  check_linear<T>(linear, "linear_forward");
  if (M < 0) fail("linear", "linear_forward '{}': row count {} < 0", linear.name, M);
  if (saved) {
    saved->xa = Tensor();
    saved->dropout_seed = dropout_seed;
  }
  if (M == 0) return;
  QLORA_ASSERT(x && y, "linear_forward '{}': null x or y", linear.name);
  const int64_t N = linear.out, K = linear.in;

  base_forward<T>(linear, x, y, M);  // (M, N)
  if (linear.bias.defined()) add_bias<T>(linear.bias, y, M, N);
  if (!linear.lora) return;

  const LoraAdapter& a = *linear.lora;
  const int64_t R = a.A.dim(0);
  const T* xd = x;  // (M, K) the adapter's input: dropout(x) when training
  std::vector<T> xd_buf;
  if (training && a.dropout > 0) {
    const std::vector<uint8_t> keep = dropout_keep(module_dropout_seed(dropout_seed, linear.name), a.dropout, M, K);
    xd_buf.resize(size_t(M * K));
    apply_keep(x, keep, a.dropout, xd_buf.data(), M * K);
    xd = xd_buf.data();
  }
  Tensor xa = Tensor::zeros({M, R}, kDType<T>);  // (M, R) kept for the backward
  cpu::gemm<T>(false, true, M, R, K, T(1), xd, K, a.A.data<T>(), K, T(0), xa.data<T>(), R);
  // y += scale · xa · Bᵀ
  cpu::gemm<T>(false, true, M, N, R, T(a.scale), xa.data<T>(), R, a.B.data<T>(), R, T(1), y, N);
  if (saved) saved->xa = xa;
}

template <typename T>
void linear_backward(Linear& linear, const T* x, const T* dy, T* dx, const LinearSaved& saved, int64_t M) {
  check_linear<T>(linear, "linear_backward");
  if (M < 0) fail("linear", "linear_backward '{}': row count {} < 0", linear.name, M);
  const int64_t N = linear.out, K = linear.in;
  if (linear.train_weight) {
    if (linear.quantized())
      fail("linear", "linear_backward '{}': train_weight is set on a frozen 4-bit weight; full fine-tuning needs a "
                     "dense base",
           linear.name);
    check_grad<T>(linear.grad_weight, {N, K}, linear, "grad_weight");
    if (linear.bias.defined()) check_grad<T>(linear.grad_bias, {N}, linear, "grad_bias");
  }
  if (linear.lora) {
    LoraAdapter& a = *linear.lora;
    const int64_t R = a.A.dim(0);
    check_grad<T>(a.grad_A, {R, K}, linear, "lora grad_A");
    check_grad<T>(a.grad_B, {N, R}, linear, "lora grad_B");
    if (M > 0 && (!saved.xa.defined() || saved.xa.shape() != Shape{M, R} || saved.xa.dtype() != kDType<T>))
      fail("linear", "linear_backward '{}': saved xa is {}; expected {} ({}, {}) from a training forward with "
                     "saved != null",
           linear.name, saved.xa.defined() ? saved.xa.describe() : std::string("undefined"), t_name(kDType<T>), M, R);
  }
  if (M == 0) return;
  QLORA_ASSERT(x && dy, "linear_backward '{}': null x or dy", linear.name);

  if (linear.lora) {
    LoraAdapter& a = *linear.lora;
    const int64_t R = a.A.dim(0);
    const T scale = T(a.scale);
    const T* xa = saved.xa.data<T>();  // (M, R)
    // dB (N, R) += scale · dyᵀ · xa
    cpu::gemm<T>(true, false, N, R, M, scale, dy, N, xa, R, T(1), a.grad_B.data<T>(), R);
    // dxa (M, R) = scale · dy · B
    std::vector<T> dxa(size_t(M * R));
    cpu::gemm<T>(false, false, M, R, N, scale, dy, N, a.B.data<T>(), R, T(0), dxa.data(), R);
    if (a.dropout > 0) {
      // The backward follows a training forward: regenerate its mask from the same seed.
      const std::vector<uint8_t> keep = dropout_keep(module_dropout_seed(saved.dropout_seed, linear.name), a.dropout,
                                                     M, K);
      std::vector<T> buf(size_t(M * K));  // (M, K): x_d, then dxa · A
      apply_keep(x, keep, a.dropout, buf.data(), M * K);
      // dA (R, K) += dxaᵀ · x_d
      cpu::gemm<T>(true, false, R, K, M, T(1), dxa.data(), R, buf.data(), K, T(1), a.grad_A.data<T>(), K);
      if (dx) {
        // dx += (dxa · A) ⊙ keep / (1 - p): dropout applies to x on the adapter path only.
        cpu::gemm<T>(false, false, M, K, R, T(1), dxa.data(), R, a.A.data<T>(), K, T(0), buf.data(), K);
        const T inv_keep = T(1.0 / (1.0 - a.dropout));
        const int64_t n = M * K;
#pragma omp parallel for if (n > kParallelMin) schedule(static)
        for (int64_t i = 0; i < n; ++i)
          if (keep[size_t(i)]) dx[i] += buf[size_t(i)] * inv_keep;
      }
    } else {
      cpu::gemm<T>(true, false, R, K, M, T(1), dxa.data(), R, x, K, T(1), a.grad_A.data<T>(), K);
      if (dx) cpu::gemm<T>(false, false, M, K, R, T(1), dxa.data(), R, a.A.data<T>(), K, T(1), dx, K);
    }
  }

  if (dx) base_backward_input<T>(linear, dy, dx, M);  // dx += dy · W0

  if (linear.train_weight) {
    cpu::matmul_dyt_x_acc<T>(dy, x, linear.grad_weight.data<T>(), M, N, K);  // dW (N, K) += dyᵀ · x
    if (linear.bias.defined()) add_column_sums<T>(dy, linear.grad_bias.data<T>(), M, N);
  }
}

Tensor merged_weight(const Linear& linear) {
  const int64_t N = linear.out, K = linear.in;
  const Shape nk = {N, K};
  // Any base dtype and adapter dtype is merged into f32, so only the shapes are checked here.
  if (linear.quantized()) {
    if (linear.qweight->shape != nk)
      fail("lora", "merged_weight '{}': 4-bit weight is {}; expected {}", linear.name,
           shape_str(linear.qweight->shape), shape_str(nk));
  } else if (!linear.weight.defined() || linear.weight.shape() != nk) {
    fail("lora", "merged_weight '{}': weight is {}; expected {}", linear.name,
         linear.weight.defined() ? linear.weight.describe() : std::string("undefined"), shape_str(nk));
  }
  Tensor out = linear.quantized() ? dequantize_4bit(*linear.qweight, DType::F32)
               : linear.weight.dtype() == DType::F32 ? linear.weight.clone()
                                                      : linear.weight.to(DType::F32);
  if (!linear.lora) return out;

  const LoraAdapter& a = *linear.lora;
  if (a.A.ndim() != 2 || a.A.dim(1) != K || a.B.shape() != Shape{N, a.A.dim(0)})
    fail("lora", "merged_weight '{}': lora A {} and B {} do not fit ({}, {})", linear.name, a.A.describe(),
         a.B.describe(), N, K);
  const int64_t R = a.A.dim(0);
  // The delta scale·B·A is formed in double from the adapter (widened if f32) and added to the base
  // before one rounding to f32; an f64 base is taken at full precision too.
  const Tensor A = a.A.to(DType::F64), B = a.B.to(DType::F64);
  const bool base_f64 = !linear.quantized() && linear.weight.dtype() == DType::F64;
  std::vector<double> delta(size_t(std::min(kQuantTileRows, N) * K));
  float* w = out.data<float>();
  for (int64_t n0 = 0; n0 < N; n0 += kQuantTileRows) {
    const int64_t nr = std::min(kQuantTileRows, N - n0);
    cpu::gemm<double>(false, false, nr, K, R, a.scale, B.data<double>() + n0 * R, R, A.data<double>(), K, 0.0,
                      delta.data(), K);
    const int64_t n = nr * K;
    float* wt = w + n0 * K;
    const double* w64 = base_f64 ? linear.weight.data<double>() + n0 * K : nullptr;
#pragma omp parallel for if (n > kParallelMin) schedule(static)
    for (int64_t i = 0; i < n; ++i) wt[i] = float((w64 ? w64[i] : double(wt[i])) + delta[size_t(i)]);
  }
  return out;
}

template void linear_forward<float>(const Linear&, const float*, float*, int64_t, bool, uint64_t, LinearSaved*);
template void linear_forward<double>(const Linear&, const double*, double*, int64_t, bool, uint64_t, LinearSaved*);
template void linear_backward<float>(Linear&, const float*, const float*, float*, const LinearSaved&, int64_t);
template void linear_backward<double>(Linear&, const double*, const double*, double*, const LinearSaved&, int64_t);

}  // namespace qlora
