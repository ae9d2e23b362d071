// Internal to src/optim: what AdamW and AdamW8bit share. Param validation (the same names, shapes
// and order on every step), the step counter, state buffers in a StateStore with their checkpoint
// keys, dtypes and shapes, state_dict / load_state_dict over those buffers, the page walk, and the
// staging of state pages onto the backend's device (the CPU backend reads the mapped pages
// directly; a device backend gets each page copied in before its kernel and back after).
// Tested through the optimizers in tests/unit/test_optim.cpp and tests/parity/test_optim_parity.cpp.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "optim/optimizer.h"

namespace qlora {

class AdamWBase : public Optimizer {
 public:
  AdamWBase(const AdamWConfig& config, std::unique_ptr<StateStore> store, std::shared_ptr<Backend> backend);

  void step(const std::vector<Param>& params, double lr) final;
  int64_t steps_taken() const final { return step_; }
  size_t state_bytes() const final { return store_->total_bytes(); }
  size_t resident_state_bytes() const final { return store_->resident_bytes(); }
  // Keys: "<param>.<buffer suffix>" for every state buffer and "step" (I64 scalar, shape ()).
  std::map<std::string, Tensor> state_dict() const final;
  // Accepts "step" as an I64, F64 or F32 scalar. Before the first step() (a resume) the tensors
  // are kept and checked against the params on that first step().
  void load_state_dict(const std::map<std::string, Tensor>& state) final;

 protected:
  // Creates the state buffers (add_buffer) for these params; called once, on the first step().
  virtual void create_state(const std::vector<Param>& params) = 0;
  // One update; t is the 1-based step count (bias correction).
  virtual void update(const std::vector<Param>& params, double lr, int64_t t) = 0;
  // Suffixes a key may end with (for a structural check of a state dict loaded before step 1).
  virtual std::vector<std::string> key_suffixes() const = 0;

  // A zero-filled buffer of a dtype and shape, saved under key; returns its store handle.
  size_t add_buffer(const std::string& key, DType dtype, const Shape& shape);

  // Calls fn(begin, end) over [0, n) in chunks of `chunk` elements (the last one shorter).
  template <typename Fn>
  static void for_each_chunk(int64_t n, int64_t chunk, Fn&& fn) {
    chunk = std::max<int64_t>(chunk, 1);
    for (int64_t b = 0; b < n; b += chunk) fn(b, std::min(n, b + chunk));
  }

  // A pointer the backend's kernels can use for bytes [offset, offset + bytes) of state buffer
  // `handle`; `slot` (0..3) names one of the ranges used at once. release() ends the use, copying a
  // staged page back to the store.
  uint8_t* acquire(size_t handle, size_t offset, size_t bytes, int slot);
  void release(size_t handle, size_t offset, size_t bytes, int slot);

  AdamWConfig config_;
  std::unique_ptr<StateStore> store_;
  std::shared_ptr<Backend> backend_;

 private:
  struct Buffer {
    std::string key;
    DType dtype;
    Shape shape;
    size_t handle;
  };
  void check_params(const std::vector<Param>& params) const;
  void apply_state(const std::map<std::string, Tensor>& state);

  int64_t step_ = 0;
  bool has_state_ = false;
  std::vector<std::string> names_;
  std::vector<Shape> shapes_;
  std::vector<Buffer> buffers_;
  std::map<std::string, Tensor> pending_;  // loaded before the state existed
  std::array<Tensor, 4> staging_;          // device copies of state pages (non-host backends)
  std::array<uint8_t*, 4> mapped_{};       // the host pages behind them
};

std::unique_ptr<Optimizer> make_adamw_f32(const AdamWConfig& config, std::unique_ptr<StateStore> store,
                                          std::shared_ptr<Backend> backend);
std::unique_ptr<Optimizer> make_adamw_8bit(const AdamWConfig& config, std::unique_ptr<StateStore> store,
                                           std::shared_ptr<Backend> backend);

}  // namespace qlora
