// AdamW with f32 state, operation for operation as torch.optim.AdamW (foreach=False,
// _single_tensor_adam with decoupled_weight_decay) computes it on CPU in f32:
//   p *= 1 - lr*wd                        (params with weight_decay only)
//   m.lerp_(g, 1 - beta1)                 ATen's vectorised lerp: fma(w, g - m, m) for w < 0.5
//   v = v*beta2; v += (1 - beta2)*g*g     mul_ then addcmul_ ((value*g)*g)
//   denom = sqrt(v) / sqrt(1 - beta2^t) + eps
//   p += (-lr / (1 - beta1^t)) * m / denom   addcdiv_
// with every Python-float scalar computed in double and rounded to f32 once, as ATen does.
// One known difference: torch's CPU sqrt is MKL's vsSqrt, not IEEE-rounded (1 ulp off on ~1 in 6
// elements); ours is IEEE, so p agrees with torch to ~1 ulp (2.3e-7 relative in the parity test).
// State: "<param>.exp_avg" and "<param>.exp_avg_sq" (torch's names), walked page by page; the
// element loop is the backend's adamw_step (backend/cpu/optimizer_ops.cpp on the CPU).
// Tested against torch in tests/parity/test_optim_parity.cpp and in tests/unit/test_optim.cpp.
#include <cmath>

#include "optim/adamw_base.h"

namespace qlora {
namespace {

class AdamW final : public AdamWBase {
 public:
  using AdamWBase::AdamWBase;

 protected:
  void create_state(const std::vector<Param>& params) override {
    for (const Param& p : params) {
      State s;
      s.m = add_buffer(p.name + ".exp_avg", DType::F32, p.value.shape());
      s.v = add_buffer(p.name + ".exp_avg_sq", DType::F32, p.value.shape());
      state_.push_back(s);
    }
  }

  std::vector<std::string> key_suffixes() const override { return {".exp_avg", ".exp_avg_sq"}; }

  void update(const std::vector<Param>& params, double lr, int64_t t) override {
    const double bc1 = 1.0 - std::pow(config_.beta1, double(t));
    const double bc2 = 1.0 - std::pow(config_.beta2, double(t));
    const float w1 = float(1.0 - config_.beta1);
    const float b2 = float(config_.beta2), c2 = float(1.0 - config_.beta2);
    const float bc2_sqrt = float(std::pow(bc2, 0.5));  // Python's bias_correction2 ** 0.5
    const float neg_step = float(-(lr / bc1));
    const float eps = float(config_.eps);
    const size_t page = store_->page_bytes();

    for (size_t i = 0; i < params.size(); ++i) {
      const Param& p = params[i];
      const bool decay = p.weight_decay && config_.weight_decay != 0.0;
      const float decay_mul = decay ? float(1.0 - lr * config_.weight_decay) : 1.0f;
      float* value = p.value.data<float>();
      const float* grad = p.grad.data<float>();
      const int64_t n = p.value.numel();
      const int64_t chunk = page == SIZE_MAX ? n : int64_t(page / sizeof(float));
      for_each_chunk(n, chunk, [&](int64_t lo, int64_t hi) {
        const int64_t len = hi - lo;
        const size_t off = size_t(lo) * sizeof(float), bytes = size_t(len) * sizeof(float);
        float* m = reinterpret_cast<float*>(acquire(state_[i].m, off, bytes, 0));
        float* v = reinterpret_cast<float*>(acquire(state_[i].v, off, bytes, 1));
        const AdamWScalars k{decay_mul, w1, b2, c2, bc2_sqrt, neg_step, eps};
        backend_->adamw_step(value + lo, grad + lo, m, v, len, k);
        release(state_[i].m, off, bytes, 0);
        release(state_[i].v, off, bytes, 1);
      });
    }
  }

 private:
  struct State {
    size_t m = 0, v = 0;  // store handles
  };
  std::vector<State> state_;
};

}  // namespace

std::unique_ptr<Optimizer> make_adamw_f32(const AdamWConfig& config, std::unique_ptr<StateStore> store,
                                          std::shared_ptr<Backend> backend) {
  return std::make_unique<AdamW>(config, std::move(store), std::move(backend));
}

}  // namespace qlora
