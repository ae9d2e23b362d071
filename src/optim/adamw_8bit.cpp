// 8-bit AdamW as bitsandbytes.optim.AdamW8bit (0.50.2) computes it on CPU
// (backends/cpu/ops.py: _optimizer_update_8bit_blockwise_cpu, and _optimizer_update_32bit_cpu for
// tensors under min_8bit_size = 4096 elements, which keep f32 state as bnb does).
// 8-bit state, per block of 256 elements: m = code_signed[state1] * absmax1,
// v = code_unsigned[state2] * absmax2; then in f32
//   m = m*beta1 + (1-beta1)*g             mul_ then add_(alpha): fma(g, 1-beta1, m*beta1)
//   v = v*beta2 + ((1-beta2)*g)*g          mul_ then addcmul_
//   denom = sqrt(v) / sqrt(1 - beta2^t) + eps
//   p *= 1 - lr*wd (wd > 0);  p += (-lr / (1 - beta1^t)) * m / denom
// and m, v are requantized with the new block absmax (quantize_block_8bit). The f32-state path
// follows bnb's 32-bit kernel: update = m / (sqrt(v) + eps*c2), p += (-lr*c2/c1) * update.
// Blocks are independent, so a page walk aligned to 256 elements gives the same bits as one pass.
// State keys: "<param>.state1", ".state2" (u8, param shape), ".absmax1", ".absmax2" (f32, blocks);
// f32-state params: "<param>.exp_avg", ".exp_avg_sq".
// Tested in tests/parity/test_optim_parity.cpp (against bnb's CPU trajectory) and tests/unit.
#include "optim/adamw_8bit.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "optim/adamw_base.h"
#include "quant/codebooks.h"

namespace qlora {

namespace {

// torch.linspace(start, end, steps, dtype=float32) on CPU: a f32 step, the first half counted up
// from start and the second half down from end (ATen's RangeFactoriesKernel).
std::vector<float> linspace_f32(float start, float end, int64_t steps) {
  std::vector<float> out(static_cast<size_t>(steps));
  const float step = (end - start) / float(steps - 1);
  const int64_t halfway = steps / 2;
  for (int64_t i = 0; i < steps; ++i)
    out[size_t(i)] = i < halfway ? start + step * float(i) : end - step * float(steps - i - 1);
  return out;
}

}  // namespace

std::array<float, 256> create_dynamic_map(bool is_signed) {
  constexpr int kMaxExponentBits = 7, kNonSignBits = 7;
  std::vector<float> data;
  for (int i = 0; i < kMaxExponentBits; ++i) {
    const int64_t fraction_items = is_signed ? (int64_t(1) << (i + kNonSignBits - kMaxExponentBits)) + 1
                                             : (int64_t(1) << (i + kNonSignBits - kMaxExponentBits + 1)) + 1;
    const std::vector<float> bounds = linspace_f32(0.1f, 1.0f, fraction_items);
    // Python: (10 ** (-(7 - 1) + i)) * means, the scalar rounded to f32 by ATen before the multiply.
    const float scale = float(std::pow(10.0, double(-(kMaxExponentBits - 1) + i)));
    for (size_t k = 0; k + 1 < bounds.size(); ++k) {
      const float mean = (bounds[k] + bounds[k + 1]) / 2.0f;
      data.push_back(scale * mean);
      if (is_signed) data.push_back(-(scale * mean));
    }
  }
  // additional_items = 2^(7 - 7) - 1 = 0: nothing more.
  data.push_back(0.0f);
  data.push_back(1.0f);
  QLORA_ASSERT(data.size() == 256, "dynamic map has {} values", data.size());
  std::sort(data.begin(), data.end());
  std::array<float, 256> out{};
  std::copy(data.begin(), data.end(), out.begin());
  return out;
}

const std::array<float, 256>& dynamic_map_unsigned() {
  static const std::array<float, 256> map = create_dynamic_map(false);
  return map;
}

float quantize_block_8bit(const float* x, int64_t n, const std::array<float, 256>& code, uint8_t* q) {
  float absmax = 0.0f;
  for (int64_t i = 0; i < n; ++i) absmax = std::fmax(absmax, std::fabs(x[i]));
  if (absmax == 0.0f) {
    // bnb divides 0/0 here; any code dequantizes to 0 with absmax 0. Take the code's zero.
    const uint8_t zero = uint8_t(std::lower_bound(code.begin(), code.end(), 0.0f) - code.begin());
    for (int64_t i = 0; i < n; ++i) q[i] = zero;
    return absmax;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i] / absmax;
    // Largest index whose code is <= v (0 when v is below every code), then the closer neighbour.
    // Branch-free binary search over the 256 sorted codes (8 fixed halvings).
    int idx = 0;
    for (int half = 128; half >= 1; half /= 2) idx += code[size_t(idx + half)] <= v ? half : 0;
    if (idx < 255 && std::fabs(v - code[size_t(idx + 1)]) < std::fabs(v - code[size_t(idx)])) ++idx;
    q[i] = uint8_t(idx);
  }
  return absmax;
}

namespace {

class AdamW8bit final : public AdamWBase {
 public:
  using AdamWBase::AdamWBase;

 protected:
  void create_state(const std::vector<Param>& params) override {
    for (const Param& p : params) {
      State s;
      const Shape& shape = p.value.shape();
      s.quantized = p.value.numel() >= kOptim8bitMinElements;
      if (s.quantized) {
        const int64_t blocks = (p.value.numel() + kOptim8bitBlock - 1) / kOptim8bitBlock;
        s.s1 = add_buffer(p.name + ".state1", DType::U8, shape);
        s.s2 = add_buffer(p.name + ".state2", DType::U8, shape);
        s.a1 = add_buffer(p.name + ".absmax1", DType::F32, {blocks});
        s.a2 = add_buffer(p.name + ".absmax2", DType::F32, {blocks});
      } else {
        s.s1 = add_buffer(p.name + ".exp_avg", DType::F32, shape);
        s.s2 = add_buffer(p.name + ".exp_avg_sq", DType::F32, shape);
      }
      state_.push_back(s);
    }
  }

  std::vector<std::string> key_suffixes() const override {
    return {".state1", ".state2", ".absmax1", ".absmax2", ".exp_avg", ".exp_avg_sq"};
  }

  void update(const std::vector<Param>& params, double lr, int64_t t) override {
    Scalars k;
    const double c1 = 1.0 - std::pow(config_.beta1, double(t));
    const double c2 = std::sqrt(1.0 - std::pow(config_.beta2, double(t)));
    k.b1 = float(config_.beta1);
    k.one_minus_b1 = float(1.0 - config_.beta1);
    k.b2 = float(config_.beta2);
    k.one_minus_b2 = float(1.0 - config_.beta2);
    k.c2 = float(c2);
    k.eps = float(config_.eps);
    k.neg_step = float(-lr / c1);
    k.eps_c2 = float(config_.eps * c2);
    k.step32 = float(-lr * c2 / c1);
    k.decay = float(1.0 - lr * config_.weight_decay);
    for (size_t i = 0; i < params.size(); ++i) {
      const bool decay = params[i].weight_decay && config_.weight_decay > 0.0;
      if (state_[i].quantized) update_8bit(params[i], state_[i], k, decay);
      else update_32bit(params[i], state_[i], k, decay);
    }
  }

 private:
  struct State {
    bool quantized = false;
    size_t s1 = 0, s2 = 0, a1 = 0, a2 = 0;  // store handles
  };
  struct Scalars {
    float b1, one_minus_b1, b2, one_minus_b2, c2, eps, neg_step, eps_c2, step32, decay;
  };

  void update_8bit(const Param& p, const State& s, const Scalars& k, bool decay) {
    const std::array<float, 256>& code1 = kDynamicCode;
    const std::array<float, 256>& code2 = dynamic_map_unsigned();
    float* value = p.value.data<float>();
    const float* grad = p.grad.data<float>();
    const int64_t n = p.value.numel();
    const size_t page = store_->page_bytes();
    // Pages of whole 256-element blocks (the u8 state is one byte per element).
    const int64_t chunk =
        page == SIZE_MAX ? n : std::max<int64_t>(1, int64_t(page) / kOptim8bitBlock) * kOptim8bitBlock;
    for_each_chunk(n, chunk, [&](int64_t lo, int64_t hi) {
      const int64_t len = hi - lo, b0 = lo / kOptim8bitBlock;
      const int64_t nb = (len + kOptim8bitBlock - 1) / kOptim8bitBlock;
      uint8_t* q1 = store_->map(s.s1, size_t(lo), size_t(len));
      uint8_t* q2 = store_->map(s.s2, size_t(lo), size_t(len));
      float* am1 = reinterpret_cast<float*>(store_->map(s.a1, size_t(b0) * 4, size_t(nb) * 4));
      float* am2 = reinterpret_cast<float*>(store_->map(s.a2, size_t(b0) * 4, size_t(nb) * 4));
#pragma omp parallel for if (len >= kOptimOmpMinElements) schedule(static)
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t e0 = b * kOptim8bitBlock, e1 = std::min(len, e0 + kOptim8bitBlock), m = e1 - e0;
        float mb[kOptim8bitBlock], vb[kOptim8bitBlock];
        const float a1 = am1[b], a2 = am2[b];
        float* pv = value + lo + e0;
        const float* g = grad + lo + e0;
        for (int64_t j = 0; j < m; ++j) {
          const float gj = g[j];
          const float mj = std::fma(gj, k.one_minus_b1, code1[q1[e0 + j]] * a1 * k.b1);
          float vj = code2[q2[e0 + j]] * a2 * k.b2;
          vj = vj + k.one_minus_b2 * gj * gj;
          const float denom = std::sqrt(vj) / k.c2 + k.eps;
          float x = pv[j];
          if (decay) x = x * k.decay;
          pv[j] = x + k.neg_step * mj / denom;
          mb[j] = mj;
          vb[j] = vj;
        }
        am1[b] = quantize_block_8bit(mb, m, code1, q1 + e0);
        am2[b] = quantize_block_8bit(vb, m, code2, q2 + e0);
      }
      store_->unmap(s.s1, size_t(lo), size_t(len));
      store_->unmap(s.s2, size_t(lo), size_t(len));
      store_->unmap(s.a1, size_t(b0) * 4, size_t(nb) * 4);
      store_->unmap(s.a2, size_t(b0) * 4, size_t(nb) * 4);
    });
  }

  void update_32bit(const Param& p, const State& s, const Scalars& k, bool decay) {
    float* value = p.value.data<float>();
    const float* grad = p.grad.data<float>();
    const int64_t n = p.value.numel();
    const size_t page = store_->page_bytes();
    const int64_t chunk = page == SIZE_MAX ? n : int64_t(page / sizeof(float));
    for_each_chunk(n, chunk, [&](int64_t lo, int64_t hi) {
      const int64_t len = hi - lo;
      const size_t off = size_t(lo) * 4, bytes = size_t(len) * 4;
      float* m = reinterpret_cast<float*>(store_->map(s.s1, off, bytes));
      float* v = reinterpret_cast<float*>(store_->map(s.s2, off, bytes));
      float* pv = value + lo;
      const float* g = grad + lo;
#pragma omp parallel for if (len >= kOptimOmpMinElements) schedule(static)
      for (int64_t j = 0; j < len; ++j) {
        const float gj = g[j];
        const float mj = std::fma(gj, k.one_minus_b1, m[j] * k.b1);
        float vj = v[j] * k.b2;
        vj = vj + k.one_minus_b2 * gj * gj;
        float x = pv[j];
        if (decay) x = x * k.decay;
        const float upd = mj / (std::sqrt(vj) + k.eps_c2);
        pv[j] = std::fma(upd, k.step32, x);  // add_(update, alpha=step_size)
        m[j] = mj;
        v[j] = vj;
      }
      store_->unmap(s.s1, off, bytes);
      store_->unmap(s.s2, off, bytes);
    });
  }

  std::vector<State> state_;
};

}  // namespace

std::unique_ptr<Optimizer> make_adamw_8bit(const AdamWConfig& config, std::unique_ptr<StateStore> store) {
  return std::make_unique<AdamW8bit>(config, std::move(store));
}

}  // namespace qlora
