// Fuzz target: a safetensors file (header JSON, offsets, dtypes, shapes), then every tensor's
// bytes read through get().
#include "core/error.h"
#include "fuzz_targets.h"
#include "fuzz_util.h"
#include "io/safetensors.h"

namespace qlora::fuzz {

void run_safetensors(const uint8_t* data, size_t size) {
  try {
    const SafetensorsFile f = SafetensorsFile::open(write_input("x.safetensors", as_text(data, size)));
    for (const std::string& name : f.names()) {
      (void)f.shape(name);
      touch(f.get(name));
    }
  } catch (const Error&) {
  }
}

}  // namespace qlora::fuzz
