// Fuzz target: the `qlora train` YAML and its command-line overrides. Leading lines of the form
// "--key value" are overrides (as `qlora train FILE --key value` passes them); the rest is the
// YAML file. Paths in the YAML rarely exist, so most runs end in validate()'s "does not exist"
// errors, after every key has been parsed and typed.
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "fuzz_targets.h"
#include "fuzz_util.h"
#include "train_config.h"

namespace qlora::fuzz {

void run_train_yaml(const uint8_t* data, size_t size) {
  std::string_view in = as_text(data, size);
  std::vector<std::pair<std::string, std::string>> overrides;
  while (in.starts_with("--")) {
    const size_t eol = std::min(in.find('\n'), in.size());
    const std::string_view line = in.substr(2, eol - 2);
    const size_t sp = std::min(line.find(' '), line.size());
    overrides.emplace_back(std::string(line.substr(0, sp)), std::string(sp < line.size() ? line.substr(sp + 1) : ""));
    in.remove_prefix(std::min(eol + 1, in.size()));
  }
  try {
    const cli::TrainRunConfig c = cli::load_train_config(write_input("train.yaml", in), overrides);
    (void)cli::train_config_yaml(c);
  } catch (const Error&) {
  }
}

}  // namespace qlora::fuzz
