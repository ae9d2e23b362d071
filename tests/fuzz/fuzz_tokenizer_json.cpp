// Fuzz target: a Hugging Face tokenizer.json (BPE byte-level or SentencePiece-style, added
// tokens, byte fallback), then the tokenizer workout (fuzz_util.h). The path names a folder that
// does not exist, so no tokenizer_config.json is read beside it.
#include "core/error.h"
#include "data/tokenizer.h"
#include "data/tokenizer_loaders.h"
#include "fuzz_targets.h"
#include "fuzz_util.h"

namespace qlora::fuzz {

void run_tokenizer_json(const uint8_t* data, size_t size) {
  try {
    const auto tok = load_hf_json_tokenizer("/nonexistent-qlora-fuzz/tokenizer.json", as_text(data, size));
    exercise(*tok);
  } catch (const Error&) {
  }
}

}  // namespace qlora::fuzz
