// Fuzz target: the JSONL dataset reader (Alpaca fields, chat `messages`, ShareGPT
// `conversations`), read to the end. The first byte picks the format and strictness, so one
// corpus covers auto-detection, forced formats and the strict/lenient paths.
#include "core/error.h"
#include "data/dataset.h"
#include "fuzz_targets.h"
#include "fuzz_util.h"

namespace qlora::fuzz {

void run_dataset_jsonl(const uint8_t* data, size_t size) {
  if (size == 0) return;
  DatasetOptions o;
  constexpr DatasetFormat kFormats[] = {DatasetFormat::Auto, DatasetFormat::Alpaca, DatasetFormat::Chat,
                                        DatasetFormat::Text};
  o.format = kFormats[data[0] & 3];
  o.strict = (data[0] & 4) != 0;
  if (data[0] & 8) o.fields = FieldMap{"question", "context", "answer"};
  o.text_chunk_bytes = 64;
  try {
    DatasetReader r(write_input("data.jsonl", as_text(data + 1, size - 1)), o);
    Example e;
    while (r.next(e)) {
    }
    (void)r.stats();
  } catch (const Error&) {
  }
}

}  // namespace qlora::fuzz
