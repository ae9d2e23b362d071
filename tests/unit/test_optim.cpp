// src/optim unit tests: heap and paged state stores give bit-identical AdamW / AdamW8bit updates
// (any page size), the paged store keeps little resident during and after a step on a 64 MB state,
// state_dict -> safetensors -> load_state_dict resumes bit-identically, bad state dicts and params
// throw naming the culprit, 8-bit state is ~1/4 of f32, gradient clipping / finiteness, schedule
// edge cases and names. (Parity with torch / bnb / transformers: tests/parity/test_optim_parity.cpp.)
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>

#include "io/safetensors.h"
#include "io_test_util.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"

namespace qlora {
namespace {

using test::expect_error;

constexpr unsigned kSeed = 4242;

std::vector<Param> random_params(const std::vector<Shape>& shapes, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<Param> params;
  for (size_t i = 0; i < shapes.size(); ++i) {
    Param p;
    p.name = "layers." + std::to_string(i) + ".weight";
    p.value = Tensor::zeros(shapes[i]);
    p.grad = Tensor::zeros(shapes[i]);
    for (int64_t j = 0; j < p.value.numel(); ++j) p.value.data<float>()[j] = normal(rng);
    p.weight_decay = i % 2 == 0;
    params.push_back(p);
  }
  return params;
}

void random_grads(std::vector<Param>& params, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  for (Param& p : params)
    for (int64_t j = 0; j < p.grad.numel(); ++j) p.grad.data<float>()[j] = normal(rng) * 0.1f;
}

std::vector<Param> clone_params(const std::vector<Param>& params) {
  std::vector<Param> out = params;
  for (Param& p : out) {
    p.value = p.value.clone();
    p.grad = p.grad.clone();
  }
  return out;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

AdamWConfig config() {
  AdamWConfig c;
  c.beta2 = 0.95;
  c.weight_decay = 0.01;
  return c;
}

// Runs `steps` steps from the same params / grads and returns the params.
std::vector<Param> run(OptimizerKind kind, std::unique_ptr<StateStore> store, const std::vector<Param>& init,
                       int steps, std::unique_ptr<Optimizer>* keep = nullptr) {
  std::vector<Param> params = clone_params(init);
  auto opt = make_optimizer(kind, config(), std::move(store));
  for (int s = 0; s < steps; ++s) {
    random_grads(params, kSeed + 100 + unsigned(s));
    opt->step(params, 1e-3 * (s + 1));
  }
  if (keep) *keep = std::move(opt);
  return params;
}

// 5000: 8-bit with a partial last block; 300: f32 state in AdamW8bit; 70000: several pages.
const std::vector<Shape> kShapes = {{5000}, {20, 15}, {70, 1000}};

TEST(OptimStore, HeapAndPagedGiveBitIdenticalUpdates) {
  SCOPED_TRACE("seed " + std::to_string(kSeed));
  const std::vector<Param> init = random_params(kShapes, kSeed);
  for (OptimizerKind kind : {OptimizerKind::AdamW, OptimizerKind::AdamW8bit}) {
    SCOPED_TRACE(optimizer_kind_name(kind));
    std::unique_ptr<Optimizer> heap_opt;
    const auto heap = run(kind, make_heap_state_store(), init, 3, &heap_opt);
    for (size_t page : {size_t(4096), size_t(1) << 20}) {
      SCOPED_TRACE("page_bytes " + std::to_string(page));
      std::unique_ptr<Optimizer> paged_opt;
      const auto paged = run(kind, make_paged_state_store("", page), init, 3, &paged_opt);
      for (size_t i = 0; i < heap.size(); ++i) EXPECT_TRUE(same_bits(heap[i].value, paged[i].value)) << heap[i].name;
      const auto a = heap_opt->state_dict(), b = paged_opt->state_dict();
      ASSERT_EQ(a.size(), b.size());
      for (const auto& [key, t] : a) EXPECT_TRUE(same_bits(t, b.at(key))) << key;
      // And the update really moved the params.
      EXPECT_FALSE(same_bits(heap[2].value, init[2].value));
    }
  }
}

// Wraps a store and records the largest resident_bytes() seen right after any map().
class PeakTrackingStore final : public StateStore {
 public:
  explicit PeakTrackingStore(std::unique_ptr<StateStore> inner) : inner_(std::move(inner)) {}
  size_t create(const std::string& name, size_t bytes) override { return inner_->create(name, bytes); }
  size_t bytes(size_t h) const override { return inner_->bytes(h); }
  const std::string& name(size_t h) const override { return inner_->name(h); }
  size_t count() const override { return inner_->count(); }
  uint8_t* map(size_t h, size_t off, size_t n) override {
    uint8_t* p = inner_->map(h, off, n);
    *peak_ = std::max(*peak_, inner_->resident_bytes());
    return p;
  }
  void unmap(size_t h, size_t off, size_t n) override { inner_->unmap(h, off, n); }
  size_t page_bytes() const override { return inner_->page_bytes(); }
  size_t total_bytes() const override { return inner_->total_bytes(); }
  size_t resident_bytes() const override { return inner_->resident_bytes(); }
  std::string kind() const override { return inner_->kind(); }
  std::shared_ptr<size_t> peak_ = std::make_shared<size_t>(0);

 private:
  std::unique_ptr<StateStore> inner_;
};

size_t process_rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  size_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * size_t(sysconf(_SC_PAGESIZE));
}

TEST(OptimStore, PagedResidentStaysNearOnePage) {
  constexpr int64_t kN = int64_t(8) << 20;  // 8M params: m + v = 64 MB of state
  constexpr size_t kPage = size_t(1) << 20;
  SCOPED_TRACE("seed " + std::to_string(kSeed));
  std::vector<Param> params = random_params({{kN}}, kSeed);
  random_grads(params, kSeed + 1);
  auto tracking = std::make_unique<PeakTrackingStore>(make_paged_state_store("", kPage));
  std::shared_ptr<size_t> peak = tracking->peak_;
  auto opt = make_optimizer(OptimizerKind::AdamW, config(), std::move(tracking));
  const size_t rss_before = process_rss_bytes();
  opt->step(params, 1e-3);
  opt->step(params, 1e-3);
  const size_t rss_after = process_rss_bytes();
  EXPECT_EQ(opt->state_bytes(), size_t(kN) * 8);
  // During a step m and v are mapped one page each; afterwards nothing stays mapped.
  EXPECT_LE(*peak, 2 * kPage);
  EXPECT_GT(*peak, 0u);
  EXPECT_LE(opt->resident_state_bytes(), 2 * kPage);
  // The kernel agrees: the process did not grow by the 64 MB of state (the heap store would).
  const double grown_mb = (double(rss_after) - double(rss_before)) / double(1 << 20);
  std::printf("[paged store] 64 MB state: peak mapped %.2f MB, RSS growth over two steps %.2f MB\n",
              double(*peak) / double(1 << 20), grown_mb);
  EXPECT_LT(grown_mb, 16.0);

  // The measurement can see state growth: the heap store's 64 MB show up in the RSS.
  auto heap = make_optimizer(OptimizerKind::AdamW, config(), make_heap_state_store());
  const size_t heap_before = process_rss_bytes();
  heap->step(params, 1e-3);
  const double heap_grown_mb = (double(process_rss_bytes()) - double(heap_before)) / double(1 << 20);
  std::printf("[heap store] 64 MB state: RSS growth %.2f MB\n", heap_grown_mb);
  EXPECT_GT(heap_grown_mb, 48.0);
}

TEST(OptimStore, BadSpillDirThrowsNamingIt) {
  expect_error([] { make_paged_state_store("/nonexistent/qlora-spill-dir", 4096); },
               {"[optim]", "/nonexistent/qlora-spill-dir"});
}

TEST(OptimState, RoundTripThroughSafetensorsContinuesBitIdentically) {
  SCOPED_TRACE("seed " + std::to_string(kSeed));
  test::TempDir dir;
  const std::vector<Param> init = random_params(kShapes, kSeed);
  for (OptimizerKind kind : {OptimizerKind::AdamW, OptimizerKind::AdamW8bit}) {
    SCOPED_TRACE(optimizer_kind_name(kind));
    // Reference: 5 uninterrupted steps.
    const auto straight = run(kind, make_heap_state_store(), init, 5);
    // Resumed: 3 steps, save, a fresh optimizer (paged store) loads before its first step, 2 more.
    std::vector<Param> params = clone_params(init);
    auto first = make_optimizer(kind, config(), make_heap_state_store());
    for (int s = 0; s < 3; ++s) {
      random_grads(params, kSeed + 100 + unsigned(s));
      first->step(params, 1e-3 * (s + 1));
    }
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (auto& [k, t] : first->state_dict()) tensors.emplace_back(k, t);
    const std::string path = dir.file(optimizer_kind_name(kind) + ".safetensors");
    write_safetensors(path, tensors);
    const SafetensorsFile file = SafetensorsFile::open(path);
    std::map<std::string, Tensor> loaded;
    for (const std::string& name : file.names()) loaded.emplace(name, file.get(name));
    auto second = make_optimizer(kind, config(), make_paged_state_store("", 4096));
    second->load_state_dict(loaded);
    EXPECT_EQ(second->steps_taken(), 3);
    for (int s = 3; s < 5; ++s) {
      random_grads(params, kSeed + 100 + unsigned(s));
      second->step(params, 1e-3 * (s + 1));
    }
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_TRUE(same_bits(params[i].value, straight[i].value)) << params[i].name;
    EXPECT_EQ(second->steps_taken(), 5);
  }
}

TEST(OptimState, LoadRejectsMismatchedKeysAndShapes) {
  const std::vector<Param> init = random_params(kShapes, kSeed);
  std::unique_ptr<Optimizer> opt;
  run(OptimizerKind::AdamW, make_heap_state_store(), init, 1, &opt);
  const auto good = opt->state_dict();
  ASSERT_TRUE(good.count("layers.0.weight.exp_avg"));
  ASSERT_TRUE(good.count("step"));

  auto renamed = good;
  renamed["layers.9.weight.exp_avg"] = renamed.at("layers.0.weight.exp_avg");
  renamed.erase("layers.0.weight.exp_avg");
  expect_error([&] { opt->load_state_dict(renamed); }, {"[optim]", "layers.0.weight.exp_avg", "missing"});

  auto extra = good;
  extra["layers.9.weight.exp_avg"] = good.at("layers.0.weight.exp_avg");
  expect_error([&] { opt->load_state_dict(extra); }, {"layers.9.weight.exp_avg"});

  auto reshaped = good;
  reshaped["layers.1.weight.exp_avg_sq"] = Tensor::zeros({300});
  expect_error([&] { opt->load_state_dict(reshaped); }, {"layers.1.weight.exp_avg_sq", "(20, 15)"});

  auto no_step = good;
  no_step.erase("step");
  expect_error([&] { opt->load_state_dict(no_step); }, {"step"});

  // 8-bit keys given to f32 AdamW before its first step: caught at once.
  auto fresh = make_optimizer(OptimizerKind::AdamW, config(), nullptr);
  auto eight = good;
  eight["layers.0.weight.state1"] = Tensor::zeros({5000}, DType::U8);
  expect_error([&] { fresh->load_state_dict(eight); }, {"layers.0.weight.state1"});
  // A dict for other params, loaded before the first step: caught on that step.
  auto fresh2 = make_optimizer(OptimizerKind::AdamW, config(), nullptr);
  fresh2->load_state_dict(renamed);
  std::vector<Param> params = clone_params(init);
  expect_error([&] { fresh2->step(params, 1e-3); }, {"layers.0.weight.exp_avg"});
}

TEST(OptimState, StepRejectsDifferentParams) {
  std::vector<Param> params = random_params(kShapes, kSeed);
  auto opt = make_optimizer(OptimizerKind::AdamW, config(), nullptr);
  opt->step(params, 1e-3);
  std::vector<Param> swapped = {params[1], params[0], params[2]};
  expect_error([&] { opt->step(swapped, 1e-3); }, {"[optim]", "layers.1.weight"});
  std::vector<Param> fewer = {params[0]};
  expect_error([&] { opt->step(fewer, 1e-3); }, {"1 params", "3"});
  std::vector<Param> bf16 = params;
  bf16[0].value = params[0].value.to(DType::BF16);
  auto opt2 = make_optimizer(OptimizerKind::AdamW, config(), nullptr);
  expect_error([&] { opt2->step(bf16, 1e-3); }, {"layers.0.weight", "f32"});
}

TEST(OptimState, EightBitStateIsAQuarterOfF32) {
  const std::vector<Param> init = random_params({{1024, 1024}}, kSeed);
  std::unique_ptr<Optimizer> f32, q8;
  run(OptimizerKind::AdamW, make_heap_state_store(), init, 1, &f32);
  run(OptimizerKind::AdamW8bit, make_heap_state_store(), init, 1, &q8);
  const size_t n = 1 << 20;
  EXPECT_EQ(f32->state_bytes(), n * 8);
  EXPECT_EQ(q8->state_bytes(), n * 2 + 2 * (n / 256) * 4);  // u8 m, v + one f32 absmax per 256
  const double ratio = double(q8->state_bytes()) / double(f32->state_bytes());
  EXPECT_NEAR(ratio, 0.25 + 1.0 / 256, 1e-9);
}

TEST(OptimState, EightBitTracksF32AdamW) {
  // Over 20 steps the 8-bit trajectory stays close to f32 AdamW: the relative quantization error
  // of m is <= ~1/2 code step (≤ ~1.5% of the block absmax), so each update differs by a few % of lr.
  const std::vector<Param> init = random_params({{64, 256}}, kSeed);
  const auto a = run(OptimizerKind::AdamW, make_heap_state_store(), init, 20);
  const auto b = run(OptimizerKind::AdamW8bit, make_heap_state_store(), init, 20);
  double worst = 0, moved = 0;
  for (int64_t i = 0; i < init[0].value.numel(); ++i) {
    worst = std::max(worst, double(std::fabs(a[0].value.data<float>()[i] - b[0].value.data<float>()[i])));
    moved = std::max(moved, double(std::fabs(a[0].value.data<float>()[i] - init[0].value.data<float>()[i])));
  }
  std::printf("[adamw8bit vs adamw] 20 steps: max |diff| %.3g, max |move| %.3g\n", worst, moved);
  EXPECT_LT(worst, 0.25 * moved);
}

TEST(OptimGrad, ClipGradNorm) {
  std::vector<Param> params = random_params({{3, 4}, {5}}, kSeed);
  for (Param& p : params)
    for (int64_t i = 0; i < p.grad.numel(); ++i) p.grad.data<float>()[i] = float(i % 3) - 1.0f + 0.5f;
  double expect = 0;
  for (const Param& p : params)
    for (int64_t i = 0; i < p.grad.numel(); ++i) expect += double(p.grad.data<float>()[i]) * p.grad.data<float>()[i];
  expect = std::sqrt(expect);
  EXPECT_NEAR(grad_norm(params), expect, 1e-12);
  // Below the limit: untouched.
  EXPECT_NEAR(clip_grad_norm(params, expect * 2), expect, 1e-12);
  EXPECT_NEAR(grad_norm(params), expect, 1e-12);
  // Disabled.
  EXPECT_NEAR(clip_grad_norm(params, 0.0), expect, 1e-12);
  // Clipped to max_norm (torch's coefficient max_norm / (norm + 1e-6)).
  EXPECT_NEAR(clip_grad_norm(params, 1.0), expect, 1e-12);
  EXPECT_NEAR(grad_norm(params), expect * (1.0 / (expect + 1e-6)), 1e-6);
}

TEST(OptimGrad, GradsFiniteSeesNanAndInf) {
  std::vector<Param> params = random_params({{100}, {40000}}, kSeed);
  random_grads(params, kSeed);
  EXPECT_TRUE(grads_finite(params));
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    params[1].grad.data<float>()[39999] = bad;
    EXPECT_FALSE(grads_finite(params)) << bad;
    EXPECT_FALSE(std::isfinite(grad_norm(params)));
    params[1].grad.data<float>()[39999] = 0.0f;
  }
  params[0].grad.data<float>()[7] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(grads_finite(params));
}

TEST(OptimSchedule, EdgeCases) {
  const double peak = 1e-3;
  // No warm-up: full LR at step 0.
  for (ScheduleKind kind : {ScheduleKind::Constant, ScheduleKind::Linear, ScheduleKind::Cosine})
    EXPECT_DOUBLE_EQ((Schedule{kind, peak, 0, 10}.lr_at(0)), peak) << schedule_kind_name(kind);
  // Warm-up is linear from 0.
  EXPECT_DOUBLE_EQ((Schedule{ScheduleKind::Cosine, peak, 4, 10}.lr_at(0)), 0.0);
  EXPECT_DOUBLE_EQ((Schedule{ScheduleKind::Cosine, peak, 4, 10}.lr_at(1)), peak / 4);
  EXPECT_DOUBLE_EQ((Schedule{ScheduleKind::Linear, peak, 4, 10}.lr_at(4)), peak);
  // At and beyond total: linear is 0; cosine is 0 at total (and, as in transformers, the
  // half-cosine is not clamped beyond it: it rises again, floored at 0).
  EXPECT_DOUBLE_EQ((Schedule{ScheduleKind::Linear, peak, 2, 10}.lr_at(10)), 0.0);
  EXPECT_DOUBLE_EQ((Schedule{ScheduleKind::Linear, peak, 2, 10}.lr_at(25)), 0.0);
  EXPECT_NEAR((Schedule{ScheduleKind::Cosine, peak, 2, 10}.lr_at(10)), 0.0, 1e-20);
  EXPECT_GE((Schedule{ScheduleKind::Cosine, peak, 2, 10}.lr_at(25)), 0.0);
  EXPECT_DOUBLE_EQ((Schedule{ScheduleKind::Constant, peak, 2, 10}.lr_at(1000)), peak);
  // Midpoint of the cosine: half the peak.
  EXPECT_NEAR((Schedule{ScheduleKind::Cosine, peak, 0, 10}.lr_at(5)), peak / 2, 1e-18);
  // total <= warmup: the span is clamped to 1 step.
  EXPECT_DOUBLE_EQ((Schedule{ScheduleKind::Linear, peak, 5, 5}.lr_at(5)), 0.0);
}

TEST(OptimNames, RoundTripAndUnknown) {
  for (const char* n : {"adamw", "adamw8bit"}) EXPECT_EQ(optimizer_kind_name(optimizer_kind_from_name(n)), n);
  for (const char* n : {"constant", "linear", "cosine"}) EXPECT_EQ(schedule_kind_name(schedule_kind_from_name(n)), n);
  expect_error([] { optimizer_kind_from_name("sgd"); }, {"[optim]", "sgd", "adamw", "adamw8bit"});
  expect_error([] { schedule_kind_from_name("step"); }, {"[optim]", "step", "constant", "linear", "cosine"});
}

}  // namespace
}  // namespace qlora
