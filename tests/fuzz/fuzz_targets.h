// The fuzz targets: one function per input format, each taking arbitrary bytes and feeding them
// to the reader as a user's file would (bad input may throw qlora::Error, which the target
// swallows; anything else escaping, a crash, or a sanitizer report is a bug). Each lives in its
// own fuzz_<name>.cpp. They are run two ways: by libFuzzer (fuzz_main.cpp, one executable per
// target, built with -DQLORA_FUZZ=ON and clang), and by tests/fuzz/test_fuzz_regressions.cpp, an
// ordinary GoogleTest that replays every committed seed and crash reproducer in any build.
#pragma once
#include <cstddef>
#include <cstdint>

// X(name): the target list, in one place for the regression test and the CMake build.
#define QLORA_FUZZ_TARGETS(X) \
  X(safetensors)              \
  X(gguf)                     \
  X(llama2c)                  \
  X(peft_adapter)             \
  X(config_json)              \
  X(train_yaml)               \
  X(tokenizer_json)           \
  X(tokenizer_spm)            \
  X(gguf_vocab)               \
  X(jinja)                    \
  X(dataset_jsonl)

namespace qlora::fuzz {

#define QLORA_FUZZ_DECLARE(name) void run_##name(const uint8_t* data, size_t size);
QLORA_FUZZ_TARGETS(QLORA_FUZZ_DECLARE)
#undef QLORA_FUZZ_DECLARE

}  // namespace qlora::fuzz
