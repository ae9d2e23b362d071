// Fuzz target: a SentencePiece tokenizer.model (protobuf ModelProto: pieces, trainer and
// normalizer specs), then the tokenizer workout (fuzz_util.h).
#include "core/error.h"
#include "data/tokenizer.h"
#include "data/tokenizer_loaders.h"
#include "fuzz_targets.h"
#include "fuzz_util.h"

namespace qlora::fuzz {

void run_tokenizer_spm(const uint8_t* data, size_t size) {
  try {
    const auto tok = load_sentencepiece_tokenizer("tokenizer.model", as_text(data, size));
    exercise(*tok);
  } catch (const Error&) {
  }
}

}  // namespace qlora::fuzz
