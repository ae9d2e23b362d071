// Replays every committed fuzz input as an ordinary test, in every build (gcc, clang, the
// sanitizer build): the seed corpora (tests/fuzz/corpus/<target>/) and the reproducers of every
// crash the fuzzers found and we fixed (tests/fuzz/regressions/<target>/, named after the bug).
// Each input must end in success or a qlora::Error; another exception fails the test, and a
// memory error crashes it (the reproducers read far past their buffers before the fixes, so they
// fault without ASan too; under the sanitizer build ASan names the read).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_targets.h"

namespace qlora::fuzz {
namespace {

namespace fs = std::filesystem;

struct Target {
  const char* name;
  void (*run)(const uint8_t*, size_t);
};
#define QLORA_FUZZ_ENTRY(name) {#name, run_##name},
constexpr Target kTargets[] = {QLORA_FUZZ_TARGETS(QLORA_FUZZ_ENTRY)};
#undef QLORA_FUZZ_ENTRY

std::vector<fs::path> inputs(const std::string& kind, const std::string& target) {
  const fs::path dir = fs::path(QLORA_SOURCE_DIR) / "tests/fuzz" / kind / target;
  std::vector<fs::path> out;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file() && e.path().filename().string()[0] != '.') out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

void replay(const Target& t, const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  const std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(in), {}};
  try {
    t.run(bytes.data(), bytes.size());
  } catch (const std::exception& e) {
    ADD_FAILURE() << t.name << " on " << path << ": escaped " << e.what();
  }
}

class FuzzInputs : public ::testing::TestWithParam<Target> {};

TEST_P(FuzzInputs, SeedCorpusReplaysCleanly) {
  const auto files = inputs("corpus", GetParam().name);
  ASSERT_FALSE(files.empty()) << "no seed corpus for " << GetParam().name;
  for (const fs::path& p : files) replay(GetParam(), p);
}

TEST_P(FuzzInputs, CrashReproducersAreFixed) {
  const auto files = inputs("regressions", GetParam().name);
  if (files.empty()) GTEST_SKIP() << "no crash found by this fuzzer yet";
  for (const fs::path& p : files) {
    SCOPED_TRACE(p.string());
    replay(GetParam(), p);
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzInputs, ::testing::ValuesIn(kTargets),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace qlora::fuzz
