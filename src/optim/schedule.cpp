// Learning-rate schedules (transformers' get_*_schedule_with_warmup lambdas times the peak LR) and
// gradient-norm utilities (torch.nn.utils.clip_grad_norm_'s rule, the norm accumulated in double).
// Tested in tests/unit/test_optim.cpp and against transformers in tests/parity/test_optim_parity.cpp.
#include <cmath>
#include <numbers>

#include "core/error.h"
#include "backend/cpu/cpu_backend.h"
#include "optim/schedule.h"

namespace qlora {

ScheduleKind schedule_kind_from_name(const std::string& name) {
  if (name == "constant") return ScheduleKind::Constant;
  if (name == "linear") return ScheduleKind::Linear;
  if (name == "cosine") return ScheduleKind::Cosine;
  fail("optim", "unknown learning-rate schedule '{}'; expected one of: constant, linear, cosine", name);
}

std::string schedule_kind_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::Constant: return "constant";
    case ScheduleKind::Linear: return "linear";
    case ScheduleKind::Cosine: return "cosine";
  }
  QLORA_ASSERT(false, "bad ScheduleKind {}", int(kind));
  return "";
}

double Schedule::lr_at(int64_t step) const {
  // transformers/optimization.py: float(current_step) / float(max(1, num_warmup_steps)) during
  // warm-up; afterwards progress over max(1, total - warmup) steps, floored at 0.
  if (step < warmup_steps) return peak_lr * (double(step) / double(std::max<int64_t>(1, warmup_steps)));
  const double span = double(std::max<int64_t>(1, total_steps - warmup_steps));
  switch (kind) {
    case ScheduleKind::Constant: return peak_lr * 1.0;
    case ScheduleKind::Linear: return peak_lr * std::max(0.0, double(total_steps - step) / span);
    case ScheduleKind::Cosine: {
      const double progress = double(step - warmup_steps) / span;
      // math.pi * float(num_cycles = 0.5) * 2.0 * progress; the factors 0.5 and 2.0 are exact.
      return peak_lr * std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * 0.5 * 2.0 * progress)));
    }
  }
  QLORA_ASSERT(false, "bad ScheduleKind {}", int(kind));
  return 0.0;
}

namespace {

void check_grad(const Param& p, const Backend& backend) {
  if (!p.grad.defined() || p.grad.dtype() != DType::F32)
    fail("optim", "param '{}' needs an f32 grad; got {}", p.name, p.grad.defined() ? p.grad.describe() : "none");
  if (p.grad.device() != backend.device())
    fail("optim", "param '{}': its grad lives on {}, the reduction runs on {}", p.name, p.grad.device().name(),
         backend.device().name());
}

// The given backend, or a CPU one for host params.
Backend& backend_or_cpu(Backend* backend, std::shared_ptr<Backend>& holder) {
  if (backend) return *backend;
  holder = make_cpu_backend();
  return *holder;
}

}  // namespace

double grad_norm(const std::vector<Param>& params, Backend* backend) {
  std::shared_ptr<Backend> holder;
  Backend& be = backend_or_cpu(backend, holder);
  double sum = 0.0;
  for (const Param& p : params) {
    check_grad(p, be);
    sum += be.sum_squares(p.grad.data<float>(), p.grad.numel());
  }
  return std::sqrt(sum);
}

bool grads_finite(const std::vector<Param>& params, Backend* backend) {
  std::shared_ptr<Backend> holder;
  Backend& be = backend_or_cpu(backend, holder);
  for (const Param& p : params) {
    check_grad(p, be);
    if (!be.all_finite(p.grad.data<float>(), p.grad.numel())) return false;
  }
  return true;
}

double clip_grad_norm(const std::vector<Param>& params, double max_norm, Backend* backend) {
  std::shared_ptr<Backend> holder;
  Backend& be = backend_or_cpu(backend, holder);
  const double norm = grad_norm(params, &be);
  if (max_norm <= 0.0) return norm;
  // torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1.0, then grads.mul_(clip_coef).
  const double coef = max_norm / (norm + 1e-6);
  if (!(coef < 1.0)) return norm;  // a NaN norm leaves the grads alone (grads_finite reports it)
  for (const Param& p : params) be.scale(p.grad.data<float>(), p.grad.numel(), float(coef));
  return norm;
}

}  // namespace qlora
