// Fuzz target: a chat template (Jinja subset) parsed, then rendered with a small conversation
// and the variables transformers passes (bos/eos tokens, add_generation_prompt).
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/jinja.h"
#include "fuzz_targets.h"
#include "fuzz_util.h"

namespace qlora::fuzz {

void run_jinja(const uint8_t* data, size_t size) {
  static const nlohmann::json context = {
      {"messages",
       {{{"role", "system"}, {"content", "Be brief."}},
        {{"role", "user"}, {"content", "Hi <s> there"}},
        {{"role", "assistant"}, {"content", " Hello! "}},
        {{"role", "user"}, {"content", ""}}}},
      {"bos_token", "<s>"},
      {"eos_token", "</s>"},
      {"add_generation_prompt", true},
      {"n", 3},
      {"x", 2.5},
      {"tools", nullptr}};
  try {
    const JinjaTemplate t{std::string(as_text(data, size))};
    (void)t.render(context);
  } catch (const Error&) {
  }
}

}  // namespace qlora::fuzz
