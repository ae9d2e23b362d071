// The engine's linear layer: base product (dense f32/bf16/f64, or frozen 4-bit), bias, LoRA
// adapter with inverted dropout, full fine-tuning gradients, and the merge W0 + scale·B·A. This
// file holds the layer's logic (argument checks, which products in which order, seeds); every
// product and element-wise loop is a Backend kernel.
// Legend: N rows (B*T tokens), K = in features, O = out features, R rank.
// Tested in tests/grad/test_lora_grads.cpp (finite differences in double, every base kind) and
// tests/unit/test_lora.cpp (PEFT init statistics, dropout, float vs double, 4-bit vs dense, merge).
#include "lora/lora_linear.h"

#include <cmath>
#include <string_view>
#include <type_traits>

#include "core/error.h"
#include "core/rng.h"

namespace qlora {

namespace {

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

// ---- argument checks (bad input: Error naming the module and the tensor) ----

const char* t_name(DType d) { return d == DType::F64 ? "f64" : "f32"; }

template <typename T>
void check_linear(const Linear& l, const char* op) {
  if (l.in <= 0 || l.out <= 0)
    fail("linear", "{} '{}': in and out features must be > 0; got in {}, out {}", op, l.name, l.in, l.out);
  const Shape ok_shape = {l.out, l.in};
  const char* x_name = t_name(kDType<T>);
  if (l.quantized()) {
    if (l.qweight->shape != ok_shape)
      fail("linear", "{} '{}': 4-bit weight is {}; expected (O, K) = {}", op, l.name, shape_str(l.qweight->shape),
           shape_str(ok_shape));
    if (l.weight.defined())
      fail("linear", "{} '{}': has both a dense and a 4-bit weight; expected one base", op, l.name);
  } else {
    if (!l.weight.defined()) fail("linear", "{} '{}': no base weight (neither dense nor 4-bit)", op, l.name);
    if (l.weight.shape() != ok_shape)
      fail("linear", "{} '{}': weight is {}; expected (O, K) = {}", op, l.name, l.weight.describe(),
           shape_str(ok_shape));
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
      fail("linear", "{} '{}': lora B is {}; expected (O, R) = ({}, {})", op, l.name, a.B.describe(), l.out, R);
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

// y (N, O) = x · W0ᵀ (overwritten).
template <typename T>
void base_forward(Backend& be, const Linear& l, const T* x, T* y, int64_t N) {
  if constexpr (std::is_same_v<T, float>) {
    if (l.bf16_products) {
      if (l.quantized()) be.qmatmul_forward_bf16(x, *l.qweight, y, N);
      else be.matmul_xwt_bf16(x, l.weight, y, N);
      return;
    }
  }
  if (l.quantized()) be.qmatmul_forward(x, *l.qweight, y, N);
  else be.matmul_xwt(x, l.weight, y, N);
}

// dx (N, K) += dy · W0.
template <typename T>
void base_backward_input(Backend& be, const Linear& l, const T* dy, T* dx, int64_t N) {
  if constexpr (std::is_same_v<T, float>) {
    if (l.bf16_products) {
      if (l.quantized()) be.qmatmul_dy_w_acc_bf16(dy, *l.qweight, dx, N);
      else be.matmul_dy_w_acc_bf16(dy, l.weight, dx, N);
      return;
    }
  }
  if (l.quantized()) be.qmatmul_dy_w_acc(dy, *l.qweight, dx, N);
  else be.matmul_dy_w_acc(dy, l.weight, dx, N);
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
  const int64_t R = config.r, K = linear.in, O = linear.out;
  auto a = std::make_unique<LoraAdapter>();
  a->A = Tensor::zeros({R, K}, dtype);
  a->B = Tensor::zeros({O, R}, dtype);  // B = 0: the adapted model starts equal to the base model
  a->grad_A = Tensor::zeros({R, K}, dtype);
  a->grad_B = Tensor::zeros({O, R}, dtype);
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
void linear_forward(Backend& be, const Linear& linear, const T* x, T* y, int64_t N, bool training,
                    uint64_t dropout_seed, LinearSaved* saved) {
  check_linear<T>(linear, "linear_forward");
  if (N < 0) fail("linear", "linear_forward '{}': row count {} < 0", linear.name, N);
  if (saved) {
    saved->xa = Tensor();
    saved->dropout_seed = dropout_seed;
  }
  if (N == 0) return;
  QLORA_ASSERT(x && y, "linear_forward '{}': null x or y", linear.name);
  const int64_t O = linear.out, K = linear.in;

  base_forward<T>(be, linear, x, y, N);  // (N, O)
  if (linear.bias.defined()) be.add_bias(linear.bias, y, N, O);
  if (!linear.lora) return;

  const LoraAdapter& a = *linear.lora;
  const int64_t R = a.A.dim(0);
  const T* xd = x;  // (N, K) the adapter's input: dropout(x) when training
  Tensor xd_buf;
  if (training && a.dropout > 0) {
    Tensor keep = be.zeros({N, K}, DType::U8);
    be.dropout_mask(module_dropout_seed(dropout_seed, linear.name), a.dropout, N, K, keep.data<uint8_t>());
    xd_buf = be.zeros({N, K}, kDType<T>);
    be.dropout_apply(x, keep.data<uint8_t>(), a.dropout, xd_buf.data<T>(), N * K);
    xd = xd_buf.data<T>();
  }
  Tensor xa = be.zeros({N, R}, kDType<T>);  // (N, R) kept for the backward
  be.gemm(false, true, N, R, K, T(1), xd, K, a.A.data<T>(), K, T(0), xa.data<T>(), R);
  // y += scale · xa · Bᵀ
  be.gemm(false, true, N, O, R, T(a.scale), xa.data<T>(), R, a.B.data<T>(), R, T(1), y, O);
  if (saved) saved->xa = xa;
}

template <typename T>
void linear_backward(Backend& be, Linear& linear, const T* x, const T* dy, T* dx, const LinearSaved& saved,
                     int64_t N) {
  check_linear<T>(linear, "linear_backward");
  if (N < 0) fail("linear", "linear_backward '{}': row count {} < 0", linear.name, N);
  const int64_t O = linear.out, K = linear.in;
  if (linear.train_weight) {
    if (linear.quantized())
      fail("linear", "linear_backward '{}': train_weight is set on a frozen 4-bit weight; full fine-tuning needs a "
                     "dense base",
           linear.name);
    check_grad<T>(linear.grad_weight, {O, K}, linear, "grad_weight");
    if (linear.bias.defined()) check_grad<T>(linear.grad_bias, {O}, linear, "grad_bias");
  }
  if (linear.lora) {
    LoraAdapter& a = *linear.lora;
    const int64_t R = a.A.dim(0);
    check_grad<T>(a.grad_A, {R, K}, linear, "lora grad_A");
    check_grad<T>(a.grad_B, {O, R}, linear, "lora grad_B");
    if (N > 0 && (!saved.xa.defined() || saved.xa.shape() != Shape{N, R} || saved.xa.dtype() != kDType<T>))
      fail("linear", "linear_backward '{}': saved xa is {}; expected {} ({}, {}) from a training forward with "
                     "saved != null",
           linear.name, saved.xa.defined() ? saved.xa.describe() : std::string("undefined"), t_name(kDType<T>), N, R);
  }
  if (N == 0) return;
  QLORA_ASSERT(x && dy, "linear_backward '{}': null x or dy", linear.name);

  if (linear.lora) {
    LoraAdapter& a = *linear.lora;
    const int64_t R = a.A.dim(0);
    const T scale = T(a.scale);
    const T* xa = saved.xa.data<T>();  // (N, R)
    // dB (O, R) += scale · dyᵀ · xa
    be.gemm(true, false, O, R, N, scale, dy, O, xa, R, T(1), a.grad_B.data<T>(), R);
    // dxa (N, R) = scale · dy · B
    Tensor dxa = be.zeros({N, R}, kDType<T>);
    be.gemm(false, false, N, R, O, scale, dy, O, a.B.data<T>(), R, T(0), dxa.data<T>(), R);
    if (a.dropout > 0) {
      // The backward follows a training forward: regenerate its mask from the same seed.
      Tensor keep = be.zeros({N, K}, DType::U8);
      be.dropout_mask(module_dropout_seed(saved.dropout_seed, linear.name), a.dropout, N, K, keep.data<uint8_t>());
      Tensor buf = be.zeros({N, K}, kDType<T>);  // (N, K): x_d, then dxa · A
      be.dropout_apply(x, keep.data<uint8_t>(), a.dropout, buf.data<T>(), N * K);
      // dA (R, K) += dxaᵀ · x_d
      be.gemm(true, false, R, K, N, T(1), dxa.data<T>(), R, buf.data<T>(), K, T(1), a.grad_A.data<T>(), K);
      if (dx) {
        // dx += (dxa · A) ⊙ keep / (1 - p): dropout applies to x on the adapter path only.
        be.gemm(false, false, N, K, R, T(1), dxa.data<T>(), R, a.A.data<T>(), K, T(0), buf.data<T>(), K);
        be.dropout_backward_acc(buf.data<T>(), keep.data<uint8_t>(), a.dropout, dx, N * K);
      }
    } else {
      be.gemm(true, false, R, K, N, T(1), dxa.data<T>(), R, x, K, T(1), a.grad_A.data<T>(), K);
      if (dx) be.gemm(false, false, N, K, R, T(1), dxa.data<T>(), R, a.A.data<T>(), K, T(1), dx, K);
    }
  }

  if (dx) base_backward_input<T>(be, linear, dy, dx, N);  // dx += dy · W0

  if (linear.train_weight) {
    T* dw = linear.grad_weight.data<T>();  // dW (O, K) += dyᵀ · x
    if constexpr (std::is_same_v<T, float>) {
      if (linear.bf16_products) be.matmul_dyt_x_acc_bf16(dy, x, dw, N, O, K);
      else be.matmul_dyt_x_acc(dy, x, dw, N, O, K);
    } else {
      be.matmul_dyt_x_acc(dy, x, dw, N, O, K);
    }
    if (linear.bias.defined()) be.add_column_sums(dy, linear.grad_bias.data<T>(), N, O);
  }
}

Tensor merged_weight(Backend& be, const Linear& linear) {
  const int64_t O = linear.out, K = linear.in;
  const Shape shape = {O, K};
  // Any base dtype and adapter dtype is merged into f32, so only the shapes are checked here.
  if (linear.quantized()) {
    if (linear.qweight->shape != shape)
      fail("lora", "merged_weight '{}': 4-bit weight is {}; expected {}", linear.name,
           shape_str(linear.qweight->shape), shape_str(shape));
  } else if (!linear.weight.defined() || linear.weight.shape() != shape) {
    fail("lora", "merged_weight '{}': weight is {}; expected {}", linear.name,
         linear.weight.defined() ? linear.weight.describe() : std::string("undefined"), shape_str(shape));
  }
  Tensor out = be.zeros(shape, DType::F32);  // (O, K) the base in f32
  const bool base_f64 = !linear.quantized() && linear.weight.dtype() == DType::F64;
  if (linear.quantized()) be.dequantize_4bit(*linear.qweight, out.data<float>());
  else be.convert(linear.weight, out);
  if (!linear.lora) return be.to_host(out);

  const LoraAdapter& a = *linear.lora;
  if (a.A.ndim() != 2 || a.A.dim(1) != K || a.B.shape() != Shape{O, a.A.dim(0)})
    fail("lora", "merged_weight '{}': lora A {} and B {} do not fit ({}, {})", linear.name, a.A.describe(),
         a.B.describe(), O, K);
  const int64_t R = a.A.dim(0);
  // The delta scale·B·A is formed in double from the adapter (widened if f32) and added to the base
  // before one rounding to f32; an f64 base is taken at full precision too.
  auto widened = [&](const Tensor& t) {
    if (t.dtype() == DType::F64) return t;
    Tensor d = be.zeros(t.shape(), DType::F64);
    be.convert(t, d);
    return d;
  };
  const Tensor A = widened(be.to_device(a.A)), B = widened(be.to_device(a.B));
  be.merge_lora(out.data<float>(), base_f64 ? linear.weight.data<double>() : nullptr, A.data<double>(),
                B.data<double>(), O, K, R, a.scale);
  return be.to_host(out);
}

template void linear_forward<float>(Backend&, const Linear&, const float*, float*, int64_t, bool, uint64_t,
                                    LinearSaved*);
template void linear_forward<double>(Backend&, const Linear&, const double*, double*, int64_t, bool, uint64_t,
                                     LinearSaved*);
template void linear_backward<float>(Backend&, Linear&, const float*, const float*, float*, const LinearSaved&,
                                     int64_t);
template void linear_backward<double>(Backend&, Linear&, const double*, const double*, double*, const LinearSaved&,
                                      int64_t);

}  // namespace qlora
