// Learning-rate schedules as transformers' get_{constant,linear,cosine}_schedule_with_warmup
// define them (linear warm-up from 0 over warmup_steps, then constant / linear to 0 / half-cosine
// to 0 at total_steps), and global gradient-norm clipping as torch.nn.utils.clip_grad_norm_.
// Tested in tests/unit/test_optim.cpp and, against transformers, tests/parity/test_optim_parity.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/param.h"

namespace qlora {

enum class ScheduleKind { Constant, Linear, Cosine };
ScheduleKind schedule_kind_from_name(const std::string& name);  // "constant" | "linear" | "cosine"
std::string schedule_kind_name(ScheduleKind kind);

struct Schedule {
  ScheduleKind kind = ScheduleKind::Constant;
  double peak_lr = 2e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  // Learning rate for optimizer step `step` (0-based: the first update uses lr_at(0)).
  double lr_at(int64_t step) const;
};

// The global L2 norm of all grads (computed in double), as torch returns it.
// The reductions run on `backend` (the params' device); without one, on a CPU backend (host params).
double grad_norm(const std::vector<Param>& params, Backend* backend = nullptr);
// Whether every gradient element is finite.
bool grads_finite(const std::vector<Param>& params, Backend* backend = nullptr);
// Scales grads by max_norm / (norm + 1e-6) when that is < 1 (torch's rule). Returns the pre-clip
// norm. max_norm <= 0 disables clipping (the norm is still returned).
double clip_grad_norm(const std::vector<Param>& params, double max_norm, Backend* backend = nullptr);

}  // namespace qlora
