// libFuzzer entry point for one target: compiled once per target with
// -DQLORA_FUZZ_RUN=run_<name> (tests/fuzz/CMakeLists.txt). qlora::Error is the readers' answer
// to bad input and is swallowed by the targets; any other exception reaches std::terminate,
// which libFuzzer reports as a crash along with the input.
#include "fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qlora::fuzz::QLORA_FUZZ_RUN(data, size);
  return 0;
}
