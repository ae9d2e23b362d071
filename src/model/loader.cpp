// load_model: picks the format from the path (a folder, GGUF magic or *.gguf, *.bin) and hands
// it to load_hf.cpp, load_gguf.cpp or load_llama2c.cpp.
#include "model/loader.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "model/load_common.h"

namespace qlora {
namespace fs = std::filesystem;

LlamaModelFile load_model(const std::string& path, const LoadOptions& options) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail("load", "{} does not exist; expected a model folder, *.gguf or *.bin", path);
  if (fs::is_directory(path, ec)) return load_hf_folder(path, options);

  char magic[4] = {};
  std::ifstream(path, std::ios::binary).read(magic, 4);
  const std::string ext = fs::path(path).extension().string();
  if (std::memcmp(magic, "GGUF", 4) == 0 || ext == ".gguf") return load_gguf_model(path, options);
  if (ext == ".bin") return load_llama2c_model(path, options);
  if (ext == ".safetensors")
    fail("load", "{}: pass the folder holding it (with config.json), not the .safetensors file", path);
  fail("load", "{}: unrecognised model format; expected a Hugging Face folder, a *.gguf file or a "
               "llama2.c *.bin checkpoint",
       path);
}

}  // namespace qlora
