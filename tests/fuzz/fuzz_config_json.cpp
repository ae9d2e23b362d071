// Fuzz target: a Hugging Face config.json through LlamaConfig (families, integer and float
// fields, rope_scaling, limits), then the derived sizes and the round trip back to JSON.
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "core/error.h"
#include "core/projections.h"
#include "fuzz_targets.h"
#include "fuzz_util.h"
#include "model/config.h"

namespace qlora::fuzz {

void run_config_json(const uint8_t* data, size_t size) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(as_text(data, size));
  } catch (const nlohmann::json::exception&) {  // from_hf_file reports these as Error
    return;
  }
  try {
    const LlamaConfig c = LlamaConfig::from_hf_json(j, "config.json");
    (void)c.parameter_count();
    for (int p = 0; p < kProjCount; ++p) (void)c.projection_shape(p);
    // What we write back must read back: an Error here is a bug in to_hf_json, not bad input.
    const nlohmann::json out = c.to_hf_json();
    try {
      LlamaConfig::from_hf_json(out, "round trip");
    } catch (const Error& e) {
      throw std::logic_error(std::string("fuzz: config.json round trip failed: ") + e.what());
    }
  } catch (const Error&) {
  }
}

}  // namespace qlora::fuzz
