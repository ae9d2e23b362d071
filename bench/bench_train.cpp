// Training throughput of qlora.cpp: full, LoRA or QLoRA steps (forward + backward + clipping at 1.0 +
// AdamW lr 1e-4) on
// seeded random token batches, the same workload bench/torch_train.py runs with transformers + PEFT.
// Prints one JSON line: tokens/s over the timed steps, seconds per step, peak RSS and the
// engine's own memory figures. Run beside the torch reference by bench/train_vs_torch.sh.
// Usage: bench_train MODEL --method qlora|lora|full [--seq 256] [--batch 1] [--steps 3]
//        [--warmup 1] [--threads 0] [--rank 8] [--alpha 16] [--checkpointing] [--dtype f32|bf16]
//        [--targets q_proj,k_proj,...] [--moe-dispatch grouped|per-token]
#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "backend/cpu/threads.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/rng.h"
#include "model/model_source.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "train/train_model.h"

using namespace qlora;

int main(int argc, char** argv) {
  prefer_passive_omp_wait(argv);  // as the qlora CLI does
  CLI::App app("qlora.cpp training throughput");
  std::string model_path, method = "qlora", dtype = "f32", targets, dispatch = "grouped";
  int64_t seq = 256, batch = 1, steps = 3, warmup = 1, rank = 8;
  double alpha = 16;
  int threads = 0;
  bool checkpointing = false;
  app.add_option("model", model_path)->required();
  app.add_option("--method", method);
  app.add_option("--seq", seq);
  app.add_option("--batch", batch);
  app.add_option("--steps", steps);
  app.add_option("--warmup", warmup);
  app.add_option("--threads", threads);
  app.add_option("--rank", rank);
  app.add_option("--alpha", alpha);
  app.add_option("--dtype", dtype);
  app.add_flag("--checkpointing", checkpointing);
  app.add_option("--targets", targets, "LoRA target_modules, comma-separated (default: all seven projections)");
  app.add_option("--moe-dispatch", dispatch, "grouped (the engine's) or per-token (the naive baseline)")
      ->check(CLI::IsMember({"grouped", "per-token"}));
  CLI11_PARSE(app, argc, argv);
  try {
    if (threads > 0) set_num_threads(threads);
    TrainModelOptions options;
    options.method = train_method_from_name(method);
    options.compute = dtype_from_name(dtype);
    options.checkpoint_every = checkpointing ? 1 : 0;
    options.lora.r = rank;
    options.lora.lora_alpha = alpha;
    if (!targets.empty()) {
      options.lora.target_modules.clear();
      for (size_t begin = 0; begin <= targets.size();) {
        const size_t end = std::min(targets.find(',', begin), targets.size());
        options.lora.target_modules.push_back(targets.substr(begin, end - begin));
        begin = end + 1;
      }
    }
    options.moe_dispatch = dispatch == "per-token" ? MoeDispatch::PerToken : MoeDispatch::Grouped;
    // Streamed in, tensor by tensor, as `qlora train` loads it.
    TrainModel model(ModelSource::open(model_path), options);
    auto optimizer = make_optimizer(OptimizerKind::AdamW, AdamWConfig{}, make_heap_state_store());

    Rng rng(0);
    Batch b;
    b.B = batch, b.T = seq;
    for (int64_t i = 0; i < batch * seq; ++i) {
      const int32_t id = int32_t(rng.next_u64() % uint64_t(model.config().vocab_size));
      b.ids.push_back(id);
      b.position_ids.push_back(i % seq);
      b.segment_ids.push_back(0);
    }
    for (int64_t i = 0; i < batch * seq; ++i) b.targets.push_back(i % seq == seq - 1 ? -100 : b.ids[size_t(i + 1)]);

    double loss_first = 0, loss_last = 0, timed = 0;
    for (int64_t s = 0; s < warmup + steps; ++s) {
      model.backend().fit_to_load();  // as Trainer::step does before each step
      const auto t0 = std::chrono::steady_clock::now();
      model.zero_grad();
      const LossSum loss = model.forward_backward(b, 1.0 / double(b.target_count()), uint64_t(s));
      clip_grad_norm(model.parameters(), 1.0);  // as bench/torch_train.py's default
      optimizer->step(model.parameters(), 1e-4);
      model.parameters_updated();
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (s == 0) loss_first = loss.mean();
      loss_last = loss.mean();
      if (s >= warmup) timed += dt;
    }
    const MemoryStats m = model.memory();
    nlohmann::json j = {{"impl", "qlora.cpp"},
                        {"method", method},
                        {"dtype", dtype},
                        {"seq", seq},
                        {"batch", batch},
                        {"checkpointing", checkpointing},
                        {"targets", targets},
                        {"moe_dispatch", dispatch},
                        {"tokens_per_s", double(steps * batch * seq) / timed},
                        {"step_s", timed / double(steps)},
                        {"peak_rss_mb", double(peak_rss_bytes()) / (1 << 20)},
                        {"weights_mb", double(m.weights) / (1 << 20)},
                        {"activations_peak_mb", double(m.activations_peak) / (1 << 20)},
                        {"optimizer_mb", double(optimizer->state_bytes()) / (1 << 20)},
                        {"loss_first", loss_first},
                        {"loss_last", loss_last}};
    fmt::print("{}\n", j.dump());
  } catch (const Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
