// Fuzz target: a GGUF vocabulary (tokenizer.ggml.* metadata: SPM "llama" or byte-level "gpt2",
// scores, token types, merges, special ids), then the tokenizer workout (fuzz_util.h).
#include "core/error.h"
#include "data/tokenizer.h"
#include "data/tokenizer_loaders.h"
#include "fuzz_targets.h"
#include "fuzz_util.h"

namespace qlora::fuzz {

void run_gguf_vocab(const uint8_t* data, size_t size) {
  try {
    const auto tok = load_gguf_tokenizer(write_input("vocab.gguf", as_text(data, size)));
    exercise(*tok);
  } catch (const Error&) {
  }
}

}  // namespace qlora::fuzz
