// Read-only memory mapping of a whole file, shared by the safetensors, GGUF and llama2.c readers.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace qlora {

struct MappedFile {
  const uint8_t* data = nullptr;
  size_t size = 0;
  std::shared_ptr<void> owner;  // unmaps when the last tensor viewing it is gone
};

// Throws Error("[io] cannot open <path>: <reason>").
MappedFile map_file(const std::string& path);

}  // namespace qlora
