// 8-bit AdamW as bitsandbytes.optim.AdamW8bit (0.50.2) computes it on CPU
// (backends/cpu/ops.py: _optimizer_update_8bit_blockwise_cpu, and _optimizer_update_32bit_cpu for
// tensors under min_8bit_size = 4096 elements, which keep f32 state as bnb does).
// 8-bit state, per block of 256 elements: m = code_signed[state1] * absmax1,
// v = code_unsigned[state2] * absmax2; then in f32
//   m = m*beta1 + (1-beta1)*g             mul_ then add_(alpha): fma(g, 1-beta1, m*beta1)
//   v = v*beta2 + ((1-beta2)*g)*g          mul_ then addcmul_
//   denom = sqrt(v) / sqrt(1 - beta2^t) + eps
//   p *= 1 - lr*wd (wd > 0);  p += (-lr / (1 - beta1^t)) * m / denom
// and m, v are requantized with the new block absmax (quantize_block_8bit in
// backend/cpu/optimizer_ops.h, the backend's adamw8bit_step). The f32-state path
// follows bnb's 32-bit kernel: update = m / (sqrt(v) + eps*c2), p += (-lr*c2/c1) * update.
// Blocks are independent, so a page walk aligned to 256 elements gives the same bits as one pass.
// State keys: "<param>.state1", ".state2" (u8, param shape), ".absmax1", ".absmax2" (f32, blocks);
// f32-state params: "<param>.exp_avg", ".exp_avg_sq".
// Tested in tests/parity/test_optim_parity.cpp (against bnb's CPU trajectory) and tests/unit.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "optim/adamw_base.h"
#include "quant/codebooks.h"

namespace qlora {

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
    AdamW8bitScalars k{};
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
      k.apply_decay = params[i].weight_decay && config_.weight_decay > 0.0;
      if (state_[i].quantized) update_8bit(params[i], state_[i], k);
      else update_32bit(params[i], state_[i], k);
    }
  }

 private:
  struct State {
    bool quantized = false;
    size_t s1 = 0, s2 = 0, a1 = 0, a2 = 0;  // store handles
  };

  void update_8bit(const Param& p, const State& s, AdamW8bitScalars k) {
    if (!maps_signed_.defined()) {  // the two dynamic maps, once, on the params' device
      maps_signed_ = backend_->to_device(dynamic_code_tensor());
      const std::array<float, 256>& u = dynamic_map_unsigned();
      maps_unsigned_ = backend_->to_device(Tensor::from_vector(std::vector<float>(u.begin(), u.end()), {256}));
    }
    const DynamicMaps maps{maps_signed_.data<float>(), maps_unsigned_.data<float>()};
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
      uint8_t* q1 = acquire(s.s1, size_t(lo), size_t(len), 0);
      uint8_t* q2 = acquire(s.s2, size_t(lo), size_t(len), 1);
      float* am1 = reinterpret_cast<float*>(acquire(s.a1, size_t(b0) * 4, size_t(nb) * 4, 2));
      float* am2 = reinterpret_cast<float*>(acquire(s.a2, size_t(b0) * 4, size_t(nb) * 4, 3));
      backend_->adamw8bit_step(value + lo, grad + lo, q1, q2, am1, am2, len, maps, k);
      release(s.s1, size_t(lo), size_t(len), 0);
      release(s.s2, size_t(lo), size_t(len), 1);
      release(s.a1, size_t(b0) * 4, size_t(nb) * 4, 2);
      release(s.a2, size_t(b0) * 4, size_t(nb) * 4, 3);
    });
  }

  void update_32bit(const Param& p, const State& s, const AdamW8bitScalars& k) {
    float* value = p.value.data<float>();
    const float* grad = p.grad.data<float>();
    const int64_t n = p.value.numel();
    const size_t page = store_->page_bytes();
    const int64_t chunk = page == SIZE_MAX ? n : int64_t(page / sizeof(float));
    for_each_chunk(n, chunk, [&](int64_t lo, int64_t hi) {
      const int64_t len = hi - lo;
      const size_t off = size_t(lo) * 4, bytes = size_t(len) * 4;
      float* m = reinterpret_cast<float*>(acquire(s.s1, off, bytes, 0));
      float* v = reinterpret_cast<float*>(acquire(s.s2, off, bytes, 1));
      backend_->adamw32bit_bnb_step(value + lo, grad + lo, m, v, len, k);
      release(s.s1, off, bytes, 0);
      release(s.s2, off, bytes, 1);
    });
  }

  Tensor maps_signed_, maps_unsigned_;
  std::vector<State> state_;
};

}  // namespace

std::unique_ptr<Optimizer> make_adamw_8bit(const AdamWConfig& config, std::unique_ptr<StateStore> store,
                                           std::shared_ptr<Backend> backend) {
  return std::make_unique<AdamW8bit>(config, std::move(store), std::move(backend));
}

}  // namespace qlora
