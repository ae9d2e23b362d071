// Fuzz target: a GGUF file (metadata of every value type, tensor infos, alignment, offsets),
// then every tensor loaded (dequantized where the type allows) and its bytes read, then the
// file opened as a model (config from metadata, tensors by Hugging Face name).
#include "core/error.h"
#include "fuzz_targets.h"
#include "fuzz_util.h"
#include "io/gguf.h"
#include "model/model_source.h"

namespace qlora::fuzz {

void run_gguf(const uint8_t* data, size_t size) {
  try {
    const std::string path = write_input("x.gguf", as_text(data, size));
    const GgufFile f = GgufFile::open(path);
    for (const auto& [key, value] : f.metadata()) {
      if (value.is_array()) (void)value.as_array(key).size();
    }
    for (const GgufTensorInfo& t : f.tensors()) {
      try {
        touch(f.load(t.name, true));
      } catch (const Error&) {  // an undequantizable type: the other tensors still load
      }
    }
    // The same file as a model: config from the llama.* metadata, tensors by HF name.
    const ModelSource src = ModelSource::open(path);
    (void)src.config().parameter_count();
    for (const std::string& name : src.tensor_names()) touch(src.load(name));
  } catch (const Error&) {
  }
}

}  // namespace qlora::fuzz
