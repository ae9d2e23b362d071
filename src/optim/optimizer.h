// Optimizers over Params: AdamW (Loshchilov & Hutter, decoupled weight decay, bias correction, the
// same operation order as torch.optim.AdamW) and 8-bit AdamW (Dettmers et al. 2022, bitsandbytes'
// blockwise 8-bit states: block 256, m in the signed dynamic map, v in the unsigned one; tensors
// under 4096 elements keep f32 state as bitsandbytes' min_8bit_size does). State lives in a
// StateStore (heap or paged). The step counter is per optimizer (all params step together).
// Tested in tests/unit/test_optim.cpp and, against torch.optim.AdamW, tests/parity/test_optim_parity.cpp.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/tensor.h"
#include "core/param.h"
#include "optim/state_store.h"

namespace qlora {

enum class OptimizerKind { AdamW, AdamW8bit };
OptimizerKind optimizer_kind_from_name(const std::string& name);  // "adamw" | "adamw8bit"; throws Error
std::string optimizer_kind_name(OptimizerKind kind);

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;  // decoupled: p -= lr * wd * p, only for params with weight_decay
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // One update of every param from its grad (grads are not modified). The first call creates the
  // state; later calls must pass the same params (names, shapes) in the same order.
  virtual void step(const std::vector<Param>& params, double lr) = 0;
  virtual int64_t steps_taken() const = 0;
  // Bytes of optimizer state, and how much of it is resident in RAM now.
  virtual size_t state_bytes() const = 0;
  virtual size_t resident_state_bytes() const = 0;
  // The whole state as named tensors (for checkpoints) and back; load() must see the same params.
  virtual std::map<std::string, Tensor> state_dict() const = 0;
  virtual void load_state_dict(const std::map<std::string, Tensor>& state) = 0;
};

// Params live on `backend`'s device (null: a CPU backend, params on the host); its kernels run
// the update.
std::unique_ptr<Optimizer> make_optimizer(OptimizerKind kind, const AdamWConfig& config,
                                          std::unique_ptr<StateStore> store, std::shared_ptr<Backend> backend = nullptr);

}  // namespace qlora
