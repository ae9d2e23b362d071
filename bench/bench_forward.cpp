// Forward-pass throughput of qlora.cpp: prefill (one sequence of --seq tokens, logits for all)
// and decode (--decode tokens one at a time with a KV cache), reported as tokens/s in JSON.
// Run beside the torch reference by bench/forward_vs_torch.sh.
#include <fmt/core.h>

#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "backend/cpu/threads.h"
#include "core/error.h"
#include "core/rng.h"
#include "model/llama.h"
#include "model/loader.h"

using namespace qlora;

int main(int argc, char** argv) {
  if (argc < 2) {
    fmt::print(stderr, "usage: bench_forward MODEL [seq=128] [decode=32] [threads=0] [repeats=3] [dtype=f32]\n");
    return 2;
  }
  try {
    const std::string path = argv[1];
    const int64_t seq = argc > 2 ? std::atoll(argv[2]) : 128;
    const int64_t decode = argc > 3 ? std::atoll(argv[3]) : 32;
    const int threads = argc > 4 ? std::atoi(argv[4]) : 0;
    const int repeats = argc > 5 ? std::atoi(argv[5]) : 3;
    const DType dtype = dtype_from_name(argc > 6 ? argv[6] : "f32");
    set_num_threads(threads);
    LoadOptions load;
    load.weight_dtype = dtype;
    ForwardOptions forward;
    forward.compute = dtype;
    const LlamaModel model(load_model(path, load), forward);
    Rng rng(1234);
    std::vector<int32_t> ids(size_t(seq + decode));
    for (auto& id : ids) id = int32_t(rng.next_u64() % uint64_t(model.config().vocab_size));
    using clock = std::chrono::steady_clock;
    double best_prefill = 1e30, best_decode = 1e30;
    for (int r = 0; r < repeats; ++r) {
      KvCache cache(model.config(), seq + decode);
      auto t0 = clock::now();
      model.forward(cache, ids.data(), seq, true);
      auto t1 = clock::now();
      for (int64_t i = 0; i < decode; ++i) model.forward(cache, ids.data() + seq + i, 1, false);
      auto t2 = clock::now();
      best_prefill = std::min(best_prefill, std::chrono::duration<double>(t1 - t0).count());
      best_decode = std::min(best_decode, std::chrono::duration<double>(t2 - t1).count());
    }
    nlohmann::json j = {{"impl", "qlora.cpp"},
                        {"threads", num_threads()},
                        {"dtype", dtype_name(dtype)},
                        {"seq", seq},
                        {"decode", decode},
                        {"prefill_tokens_per_s", double(seq) / best_prefill},
                        {"decode_tokens_per_s", decode ? double(decode) / best_decode : 0.0}};
    fmt::print("{}\n", j.dump());
  } catch (const Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
