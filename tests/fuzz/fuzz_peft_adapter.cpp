// Fuzz target: a PEFT adapter folder. The input is adapter_config.json, a NUL byte, then
// adapter_model.safetensors (JSON cannot hold a raw NUL, so the split is unambiguous); no NUL
// means an empty safetensors file.
#include <algorithm>

#include "core/error.h"
#include "fuzz_targets.h"
#include "fuzz_util.h"
#include "io/peft_adapter.h"

namespace qlora::fuzz {

void run_peft_adapter(const uint8_t* data, size_t size) {
  const std::string_view in = as_text(data, size);
  const size_t nul = std::min(in.find('\0'), in.size());
  write_input("adapter_config.json", in.substr(0, nul));
  write_input("adapter_model.safetensors", nul < in.size() ? in.substr(nul + 1) : std::string_view());
  try {
    const PeftAdapter a = read_peft_adapter(scratch_dir());
    (void)a.config.scale();
    for (const auto& [key, t] : a.tensors) touch(t);
  } catch (const Error&) {
  }
}

}  // namespace qlora::fuzz
