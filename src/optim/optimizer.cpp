// Optimizer names, make_optimizer, and AdamWBase (adamw_base.h): param validation, the step
// counter, state buffers and state_dict / load_state_dict. Tested in tests/unit/test_optim.cpp.
#include <cmath>
#include <cstring>
#include <set>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "optim/adamw_base.h"

namespace qlora {

OptimizerKind optimizer_kind_from_name(const std::string& name) {
  if (name == "adamw") return OptimizerKind::AdamW;
  if (name == "adamw8bit") return OptimizerKind::AdamW8bit;
  fail("optim", "unknown optimizer '{}'; expected one of: adamw, adamw8bit", name);
}

std::string optimizer_kind_name(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::AdamW: return "adamw";
    case OptimizerKind::AdamW8bit: return "adamw8bit";
  }
  QLORA_ASSERT(false, "bad OptimizerKind {}", int(kind));
  return "";
}

std::unique_ptr<Optimizer> make_optimizer(OptimizerKind kind, const AdamWConfig& config,
                                          std::unique_ptr<StateStore> store, std::shared_ptr<Backend> backend) {
  if (!store) store = make_heap_state_store();
  if (!backend) backend = make_cpu_backend();
  if (!(config.beta1 >= 0 && config.beta1 < 1) || !(config.beta2 >= 0 && config.beta2 < 1))
    fail("optim", "betas must be in [0, 1); got ({}, {})", config.beta1, config.beta2);
  if (!(config.eps >= 0) || !(config.weight_decay >= 0))
    fail("optim", "eps and weight_decay must be >= 0; got eps {}, weight_decay {}", config.eps, config.weight_decay);
  switch (kind) {
    case OptimizerKind::AdamW: return make_adamw_f32(config, std::move(store), std::move(backend));
    case OptimizerKind::AdamW8bit: return make_adamw_8bit(config, std::move(store), std::move(backend));
  }
  QLORA_ASSERT(false, "bad OptimizerKind {}", int(kind));
  return nullptr;
}

AdamWBase::AdamWBase(const AdamWConfig& config, std::unique_ptr<StateStore> store, std::shared_ptr<Backend> backend)
    : config_(config), store_(std::move(store)), backend_(std::move(backend)) {}

uint8_t* AdamWBase::acquire(size_t handle, size_t offset, size_t bytes, int slot) {
  uint8_t* host = store_->map(handle, offset, bytes);
  if (backend_->device().host_accessible()) return host;
  Tensor& stage = staging_[size_t(slot)];
  if (!stage.defined() || stage.nbytes() < bytes) stage = backend_->zeros({int64_t(bytes)}, DType::U8);
  backend_->copy_from_host(stage.raw(), host, bytes);
  mapped_[size_t(slot)] = host;
  return stage.data<uint8_t>();
}

void AdamWBase::release(size_t handle, size_t offset, size_t bytes, int slot) {
  if (!backend_->device().host_accessible()) backend_->copy_to_host(mapped_[size_t(slot)], staging_[size_t(slot)].raw(), bytes);
  store_->unmap(handle, offset, bytes);
}

void AdamWBase::check_params(const std::vector<Param>& params) const {
  if (has_state_ && params.size() != names_.size())
    fail("optim", "step() got {} params; the optimizer state was made for {}", params.size(), names_.size());
  std::set<std::string> seen;
  for (size_t i = 0; i < params.size(); ++i) {
    const Param& p = params[i];
    if (!seen.insert(p.name).second) fail("optim", "param name '{}' appears twice", p.name);
    if (!p.value.defined() || !p.grad.defined())
      fail("optim", "param '{}' needs a value and a grad", p.name);
    if (p.value.dtype() != DType::F32 || p.grad.dtype() != DType::F32)
      fail("optim", "param '{}': optimizers take f32 values and grads; got {} and {}", p.name,
           p.value.describe(), p.grad.describe());
    if (p.value.device() != backend_->device() || p.grad.device() != backend_->device())
      fail("optim", "param '{}' lives on {}; the optimizer runs on {}", p.name, p.value.device().name(),
           backend_->device().name());
    if (p.value.shape() != p.grad.shape())
      fail("optim", "param '{}': grad shape {} differs from value shape {}", p.name, shape_str(p.grad.shape()),
           shape_str(p.value.shape()));
    if (has_state_ && (p.name != names_[i] || p.value.shape() != shapes_[i]))
      fail("optim", "param {} is '{}' {}; the optimizer state has '{}' {} there (same params, same order)", i,
           p.name, shape_str(p.value.shape()), names_[i], shape_str(shapes_[i]));
  }
}

void AdamWBase::step(const std::vector<Param>& params, double lr) {
  check_params(params);
  if (!has_state_) {
    for (const Param& p : params) {
      names_.push_back(p.name);
      shapes_.push_back(p.value.shape());
    }
    create_state(params);
    has_state_ = true;
    if (!pending_.empty()) {
      std::map<std::string, Tensor> pending = std::move(pending_);
      pending_.clear();
      apply_state(pending);
    }
  }
  ++step_;
  update(params, lr, step_);
}

size_t AdamWBase::add_buffer(const std::string& key, DType dtype, const Shape& shape) {
  const size_t handle = store_->create(key, size_t(shape_numel(shape)) * dtype_size(dtype));
  buffers_.push_back({key, dtype, shape, handle});
  return handle;
}

std::map<std::string, Tensor> AdamWBase::state_dict() const {
  std::map<std::string, Tensor> out;
  if (!has_state_ && !pending_.empty()) return pending_;
  for (const Buffer& b : buffers_) {
    Tensor t = Tensor::zeros(b.shape, b.dtype);
    const int64_t n = int64_t(t.nbytes());
    const size_t page = store_->page_bytes();
    for_each_chunk(n, page == SIZE_MAX ? n : int64_t(page), [&](int64_t lo, int64_t hi) {
      const uint8_t* src = store_->map(b.handle, size_t(lo), size_t(hi - lo));
      std::memcpy(static_cast<uint8_t*>(t.raw()) + lo, src, size_t(hi - lo));
      store_->unmap(b.handle, size_t(lo), size_t(hi - lo));
    });
    out.emplace(b.key, std::move(t));
  }
  Tensor step = Tensor::zeros({}, DType::I64);
  step.data<int64_t>()[0] = step_;
  out.emplace("step", std::move(step));
  return out;
}

namespace {

int64_t step_from(const std::map<std::string, Tensor>& state) {
  auto it = state.find("step");
  if (it == state.end()) fail("optim", "optimizer state has no 'step' entry");
  const Tensor& t = it->second;
  if (t.numel() != 1) fail("optim", "optimizer state 'step' must be a scalar; got {}", t.describe());
  double v = 0;
  switch (t.dtype()) {
    case DType::I64: v = double(t.data<int64_t>()[0]); break;
    case DType::F64: v = t.data<double>()[0]; break;
    case DType::F32: v = t.data<float>()[0]; break;
    default: fail("optim", "optimizer state 'step' must be i64, f64 or f32; got {}", t.describe());
  }
  if (!(v >= 0) || v != std::floor(v) || v > 9e15)
    fail("optim", "optimizer state 'step' must be a whole number >= 0; got {}", v);
  return int64_t(v);
}

}  // namespace

void AdamWBase::load_state_dict(const std::map<std::string, Tensor>& state) {
  const int64_t step = step_from(state);
  if (!has_state_) {
    // No params seen yet: a structural check now, the full one on the first step().
    const std::vector<std::string> suffixes = key_suffixes();
    std::map<std::string, Tensor> kept;
    for (const auto& [key, t] : state) {
      if (key == "step") continue;
      const bool known = std::any_of(suffixes.begin(), suffixes.end(), [&key = key](const std::string& s) {
        return key.size() > s.size() && key.compare(key.size() - s.size(), s.size(), s) == 0;
      });  // (binding captured by an init-capture: C++20 allows the plain capture, clang 14 does not)
      if (!known)
        fail("optim", "unexpected optimizer state key '{}' (not <param>.exp_avg/... for this optimizer)", key);
      kept.emplace(key, t.clone());
    }
    pending_ = std::move(kept);
    step_ = step;
    return;
  }
  apply_state(state);
  step_ = step;
}

void AdamWBase::apply_state(const std::map<std::string, Tensor>& state) {
  // Validate everything before writing anything, so a bad dict leaves the state untouched.
  std::set<std::string> expected{"step"};
  for (const Buffer& b : buffers_) {
    expected.insert(b.key);
    auto it = state.find(b.key);
    if (it == state.end()) fail("optim", "optimizer state key '{}' is missing", b.key);
    const Tensor& t = it->second;
    if (t.dtype() != b.dtype || t.shape() != b.shape)
      fail("optim", "optimizer state '{}' is {}; expected {} {}", b.key, t.describe(), dtype_name(b.dtype),
           shape_str(b.shape));
  }
  for (const auto& [key, t] : state)
    if (!expected.count(key)) fail("optim", "unexpected optimizer state key '{}' (no such param state)", key);
  for (const Buffer& b : buffers_) {
    const Tensor& t = state.at(b.key);
    const int64_t n = int64_t(t.nbytes());
    const size_t page = store_->page_bytes();
    for_each_chunk(n, page == SIZE_MAX ? n : int64_t(page), [&](int64_t lo, int64_t hi) {
      uint8_t* dst = store_->map(b.handle, size_t(lo), size_t(hi - lo));
      std::memcpy(dst, static_cast<const uint8_t*>(t.raw()) + lo, size_t(hi - lo));
      store_->unmap(b.handle, size_t(lo), size_t(hi - lo));
    });
  }
}

}  // namespace qlora
