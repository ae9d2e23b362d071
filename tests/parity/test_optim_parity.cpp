// Optimizers and schedules against their references, from tests/parity/golden/optim_golden.safetensors
// (made by tests/parity/golden/make_optim_goldens.py with torch, transformers and bitsandbytes):
// AdamW vs torch.optim.AdamW over 5 steps, AdamW8bit vs bitsandbytes' CPU AdamW8bit (params, and
// the quantized state after step 1), the 8-bit dynamic maps and block quantizer bit for bit, and
// the LR schedules vs transformers.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "io/safetensors.h"
#include "backend/cpu/optimizer_ops.h"
#include "quant/codebooks.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "quant/codebooks.h"
#include "test_paths.h"

namespace qlora {
namespace {

// Golden hyper-parameters (make_optim_goldens.py).
constexpr double kLr = 1e-2, kBeta1 = 0.9, kBeta2 = 0.98, kEps = 1e-6, kWd = 0.1;
constexpr int kSteps = 5;
const char* const kParams[] = {"p0", "p1", "p2"};  // p2 has no weight decay

// AdamW follows torch's f32 operation order and matches mul_/lerp_/addcmul_ bit for bit; torch's
// CPU sqrt goes through MKL's vsSqrt, which is not IEEE-rounded (about 1 in 6 elements differ by
// 1 ulp from std::sqrt), so p differs by ~1 ulp. Measured max error / max|p| over 5 steps and the
// state: 1.9e-7; 1e-6 leaves room for other compilers and libms.
constexpr double kAdamWRelTol = 1e-6;
// transformers computes the same double formulas; only libm's cos may differ in the last bit.
constexpr double kScheduleRelTol = 1e-9;

std::string golden_path() { return test::source_path("tests/parity/golden/optim_golden.safetensors"); }

Tensor copy_f32(const Tensor& t) { return t.to(DType::F32).clone(); }

// max |a - b| / max |b|
double rel_err(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.numel(), b.numel());
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    num = std::max(num, std::fabs(double(a.data<float>()[i]) - double(b.data<float>()[i])));
    den = std::max(den, std::fabs(double(b.data<float>()[i])));
  }
  return num / std::max(den, 1e-30);
}

double abs_err(const Tensor& a, const Tensor& b) {
  double num = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    num = std::max(num, std::fabs(double(a.data<float>()[i]) - double(b.data<float>()[i])));
  return num;
}

std::vector<Param> golden_params(const SafetensorsFile& f) {
  std::vector<Param> params;
  for (const char* name : kParams) {
    Param p;
    p.name = name;
    p.value = copy_f32(f.get(std::string("init.") + name));
    p.grad = Tensor::zeros(p.value.shape());
    p.weight_decay = std::string(name) != "p2";
    params.push_back(p);
  }
  return params;
}

void set_grads(const SafetensorsFile& f, std::vector<Param>& params, int step) {
  for (Param& p : params) {
    Tensor g = f.get("grad." + std::to_string(step) + "." + p.name);
    std::copy(g.data<float>(), g.data<float>() + g.numel(), p.grad.data<float>());
  }
}

AdamWConfig golden_config() {
  AdamWConfig c;
  c.beta1 = kBeta1;
  c.beta2 = kBeta2;
  c.eps = kEps;
  c.weight_decay = kWd;
  return c;
}

TEST(OptimParity, AdamWMatchesTorch) {
  const SafetensorsFile f = SafetensorsFile::open(golden_path());
  for (const char* store_kind : {"heap", "paged"}) {
    SCOPED_TRACE(store_kind);
    auto store = std::string(store_kind) == "heap" ? make_heap_state_store() : make_paged_state_store("", 4096);
    auto opt = make_optimizer(OptimizerKind::AdamW, golden_config(), std::move(store));
    std::vector<Param> params = golden_params(f);
    double worst = 0;
    for (int s = 1; s <= kSteps; ++s) {
      set_grads(f, params, s);
      opt->step(params, kLr);
      for (const Param& p : params) {
        const double e = rel_err(p.value, f.get("adamw." + std::to_string(s) + "." + p.name));
        worst = std::max(worst, e);
        EXPECT_LE(e, kAdamWRelTol) << "step " << s << " param " << p.name;
      }
    }
    const auto state = opt->state_dict();
    for (const Param& p : params)
      for (const char* k : {"exp_avg", "exp_avg_sq"}) {
        const std::string key = p.name + "." + k;
        const double e = rel_err(state.at(key), f.get("adamw.state." + key));
        worst = std::max(worst, e);
        EXPECT_LE(e, kAdamWRelTol) << key;
      }
    EXPECT_EQ(state.at("step").data<int64_t>()[0], kSteps);
    std::printf("[adamw vs torch, %s store] max error / max|ref| over params and state: %.3g (tol %.0e)\n",
                store_kind, worst, kAdamWRelTol);
  }
}

TEST(OptimParity, DynamicMapsMatchBitsandbytes) {
  const SafetensorsFile f = SafetensorsFile::open(golden_path());
  const Tensor s = f.get("dynamic_map.signed"), u = f.get("dynamic_map.unsigned");
  ASSERT_EQ(s.numel(), 256);
  ASSERT_EQ(u.numel(), 256);
  const std::array<float, 256> derived_signed = create_dynamic_map(true);
  for (int i = 0; i < 256; ++i) {
    EXPECT_EQ(u.data<float>()[i], dynamic_map_unsigned()[size_t(i)]) << "unsigned map index " << i;
    EXPECT_EQ(s.data<float>()[i], derived_signed[size_t(i)]) << "signed map (derived) index " << i;
    EXPECT_EQ(s.data<float>()[i], kDynamicCode[size_t(i)]) << "signed map (kDynamicCode) index " << i;
  }
}

// bitsandbytes 0.50.2's CPU quantizer (csrc/cpu_ops.cpp quantize_cpu) is not exactly nearest-code:
// its BinSearch "Direct2" lookup is approximate where codes are closer than its grid, which the
// golden shows for |x / absmax| < ~0.006 (e.g. an exact 0 goes to code 131 = 1.2e-5, not to 0),
// and near midpoints elsewhere (the optimizer test below meets a few).
// Ours is nearest-code (ties to the lower code), as the CUDA kernel intends. So: bit-exact above
// this magnitude, and below it ours must be at least as close as bnb's choice.
constexpr float kBnbCpuSearchExactAbove = 0.01f;

TEST(OptimParity, BlockQuantizerMatchesBitsandbytesCpu) {
  const SafetensorsFile f = SafetensorsFile::open(golden_path());
  if (!f.contains("quant.x")) GTEST_SKIP() << "golden made without bitsandbytes' CPU kernels";
  const Tensor x = f.get("quant.x");
  const int64_t n = x.numel();
  for (bool is_signed : {true, false}) {
    const std::string name = is_signed ? "signed" : "unsigned";
    SCOPED_TRACE(name);
    const Tensor q_ref = f.get("quant." + name + ".q"), absmax_ref = f.get("quant." + name + ".absmax");
    std::vector<float> data(x.data<float>(), x.data<float>() + n);
    if (!is_signed)
      for (float& v : data) v = v * v;
    const std::array<float, 256> code = create_dynamic_map(is_signed);
    std::vector<uint8_t> q(static_cast<size_t>(n));
    int exact_region = 0, differ_small = 0;
    for (int64_t b = 0; b * 256 < n; ++b) {
      const int64_t len = std::min<int64_t>(256, n - b * 256);
      const float absmax = cpu::quantize_block_8bit(data.data() + b * 256, len, code.data(), q.data() + b * 256);
      EXPECT_EQ(absmax, absmax_ref.data<float>()[b]) << "block " << b;
      for (int64_t i = b * 256; i < b * 256 + len; ++i) {
        const float v = data[size_t(i)] / absmax;
        const uint8_t mine = q[size_t(i)], bnb = q_ref.data<uint8_t>()[i];
        if (std::fabs(v) >= kBnbCpuSearchExactAbove) {
          ++exact_region;
          EXPECT_EQ(int(mine), int(bnb)) << "element " << i << " x/absmax " << v;
        } else {
          differ_small += mine != bnb;
          EXPECT_LE(std::fabs(v - code[mine]), std::fabs(v - code[bnb])) << "element " << i << " x/absmax " << v;
        }
      }
    }
    std::printf("[8-bit quantizer vs bnb cpu, %s] %d elements >= %.2g bit-exact; %d of %lld smaller ones differ "
                "(ours nearer)\n", name.c_str(), exact_region, kBnbCpuSearchExactAbove, differ_small,
                (long long)(n - exact_region));
  }
}

// Our 8-bit AdamW vs bnb's CPU AdamW8bit. Besides the search above, bnb's quantize_cpu sets
// code[0] = -1.0 in the map it is given, which is the optimizer's own qmap: from step 2 bnb-CPU
// dequantizes byte 0 as -1.0 (signed map: the negative block maximum of m, 0.7% larger than the
// map's -0.99297; unsigned map: byte 0 is 0 in the map). The CUDA kernel and ours keep the map.
// What is checked: (a) after step 1 (state made from zeros, so the same f32 values are quantized)
// the state bytes agree except where bnb's approximate search chose a farther code (it does so
// near midpoints at any magnitude, and often below 0.01); (b) params with f32 state (< 4096
// elements) follow bnb's 32-bit kernel to ~1 ulp; (c) the 8-bit params stay within a fraction of
// lr of bnb's (measured ~0.24 lr at the worst element) and, over all elements, ours is no further
// from f32 AdamW (torch, same grads) than bnb's is.
constexpr double kBnb32AbsTolInLr = 1e-4;    // measured 1.2e-5: f32 rounding, p ~ 1, lr 1e-2
constexpr double kBnb8MaxAbsTolInLr = 0.5;   // measured 0.236 (the elements hit by bnb's quirks)
constexpr double kBnb8RmsTolInLr = 0.05;     // RMS over the 12297 elements; measured value printed
constexpr double kVsTorchSlack = 1.10;       // ours vs torch may be at most 10% worse than bnb vs torch

TEST(OptimParity, Adam8bitMatchesBitsandbytesCpu) {
  const SafetensorsFile f = SafetensorsFile::open(golden_path());
  if (!f.contains("bnb8.1.p0")) GTEST_SKIP() << "golden made without bitsandbytes' CPU AdamW8bit";
  auto opt = make_optimizer(OptimizerKind::AdamW8bit, golden_config(), make_paged_state_store("", 4096));
  std::vector<Param> params = golden_params(f);
  double worst_8bit = 0, worst_32bit = 0, rms_8bit = 0, ours_vs_torch = 0, bnb_vs_torch = 0;
  for (int s = 1; s <= kSteps; ++s) {
    set_grads(f, params, s);
    opt->step(params, kLr);
    for (const Param& p : params) {
      const Tensor ref = f.get("bnb8." + std::to_string(s) + "." + p.name);
      const double e = abs_err(p.value, ref) / kLr;
      if (p.name != "p0") {
        worst_32bit = std::max(worst_32bit, e);
        EXPECT_LE(e, kBnb32AbsTolInLr) << "step " << s << " param " << p.name;
        continue;
      }
      worst_8bit = std::max(worst_8bit, e);
      EXPECT_LE(e, kBnb8MaxAbsTolInLr) << "step " << s;
      const Tensor torch_ref = f.get("adamw." + std::to_string(s) + ".p0");
      double sq = 0, d_ours = 0, d_bnb = 0;
      for (int64_t i = 0; i < ref.numel(); ++i) {
        const double mine = p.value.data<float>()[i], bnb = ref.data<float>()[i], tr = torch_ref.data<float>()[i];
        sq += (mine - bnb) * (mine - bnb);
        d_ours += (mine - tr) * (mine - tr);
        d_bnb += (bnb - tr) * (bnb - tr);
      }
      const double rms = std::sqrt(sq / double(ref.numel())) / kLr;
      rms_8bit = std::max(rms_8bit, rms);
      EXPECT_LE(rms, kBnb8RmsTolInLr) << "step " << s;
      ours_vs_torch = std::sqrt(d_ours / double(ref.numel())) / kLr;
      bnb_vs_torch = std::sqrt(d_bnb / double(ref.numel())) / kLr;
      // (After step 1 both equal f32 AdamW up to torch's MKL sqrt, so compare from step 2.)
      if (s >= 2) {
        EXPECT_LE(ours_vs_torch, kVsTorchSlack * bnb_vs_torch) << "step " << s;
      }
    }
    if (s == 1) {
      // Step 1 starts from zero state, so m = (1-beta1)*g and v = (1-beta2)*g*g are the same f32
      // values in both; the bytes may differ only where bnb's search picked a farther code.
      const auto state = opt->state_dict();
      const Tensor g = f.get("grad.1.p0");
      for (const char* k : {"state1", "state2"}) {
        const bool first = std::string(k) == "state1";
        const std::array<float, 256> code = create_dynamic_map(first);
        const Tensor mine = state.at(std::string("p0.") + k), ref = f.get(std::string("bnb8.step1.p0.") + k);
        const Tensor absmax = state.at(std::string("p0.absmax") + (first ? "1" : "2"));
        ASSERT_EQ(mine.numel(), ref.numel());
        int64_t diff = 0;
        for (int64_t i = 0; i < ref.numel(); ++i) {
          const uint8_t a = mine.data<uint8_t>()[i], b = ref.data<uint8_t>()[i];
          if (a == b) continue;
          ++diff;
          const float gi = g.data<float>()[i];
          const float x = first ? float(1.0 - kBeta1) * gi : float(1.0 - kBeta2) * gi * gi;
          const float v = x / absmax.data<float>()[i / 256];
          EXPECT_LE(std::fabs(v - code[a]), std::fabs(v - code[b])) << k << " element " << i << " x/absmax " << v;
        }
        std::printf("[adamw8bit vs bnb] step 1 p0.%s: %lld of %lld bytes differ, each where ours is the nearer code\n",
                    k, (long long)diff, (long long)ref.numel());
      }
      for (const char* k : {"absmax1", "absmax2"})
        EXPECT_EQ(rel_err(state.at(std::string("p0.") + k), f.get(std::string("bnb8.step1.p0.") + k)), 0.0) << k;
    }
  }
  std::printf("[adamw8bit vs bnb cpu] over 5 steps, in units of lr: 8-bit state max %.3g (tol %.2g), rms %.3g "
              "(tol %.2g); f32 state max %.3g (tol %.0e)\n",
              worst_8bit, kBnb8MaxAbsTolInLr, rms_8bit, kBnb8RmsTolInLr, worst_32bit, kBnb32AbsTolInLr);
  std::printf("[adamw8bit vs torch adamw] after step 5, rms / lr: ours %.3g, bnb cpu %.3g\n", ours_vs_torch,
              bnb_vs_torch);
}

TEST(OptimParity, SchedulesMatchTransformers) {
  const SafetensorsFile f = SafetensorsFile::open(golden_path());
  const Tensor steps = f.get("sched.steps");
  const double peak = 2e-4;
  const std::pair<int64_t, int64_t> configs[] = {{10, 100}, {0, 50}, {5, 5}, {3, 2}};
  double worst = 0;
  for (const auto& [warmup, total] : configs)
    for (const char* kind : {"constant", "linear", "cosine"}) {
      const std::string key =
          std::string("sched.") + kind + ".w" + std::to_string(warmup) + ".t" + std::to_string(total);
      const Tensor ref = f.get(key);
      Schedule sched{schedule_kind_from_name(kind), peak, warmup, total};
      for (int64_t i = 0; i < steps.numel(); ++i) {
        const int64_t step = steps.data<int64_t>()[i];
        const double e = std::fabs(sched.lr_at(step) - ref.data<double>()[i]) / peak;
        worst = std::max(worst, e);
        EXPECT_LE(e, kScheduleRelTol) << key << " step " << step;
      }
    }
  std::printf("[schedules vs transformers] max |lr - ref| / peak: %.3g (tol %.0e)\n", worst, kScheduleRelTol);
}

}  // namespace
}  // namespace qlora
