// Tokenizer throughput: encodes a text file REPEATS times (no BOS, special tokens not parsed, as
// HF tokenizers' encode(add_special_tokens=False) treats plain text) and prints one JSON line
// {"bytes", "tokens", "seconds", "mb_per_s"} with the best repeat. bench/tokenize_vs_hf.sh runs it
// beside Hugging Face tokenizers on the same text.
// Usage: bench_tokenize TOKENIZER TEXT_FILE [REPEATS]
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>

#include "core/error.h"
#include "data/tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    fmt::print(stderr, "usage: bench_tokenize TOKENIZER TEXT_FILE [REPEATS]\n");
    return 2;
  }
  try {
    const auto tokenizer = qlora::load_tokenizer(argv[1]);
    std::ifstream in(argv[2], std::ios::binary);
    if (!in) qlora::fail("bench", "cannot read {}", argv[2]);
    const std::string text((std::istreambuf_iterator<char>(in)), {});
    const int repeats = argc > 3 ? std::max(1, std::atoi(argv[3])) : 3;
    double best = 1e30;
    size_t tokens = 0;
    for (int r = 0; r < repeats; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      tokens = tokenizer->encode(text, false, false).size();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::min(best, s);
    }
    fmt::print("{{\"impl\": \"qlora.cpp\", \"bytes\": {}, \"tokens\": {}, \"seconds\": {:.4f}, \"mb_per_s\": {:.3f}}}\n",
               text.size(), tokens, best, double(text.size()) / 1e6 / best);
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
