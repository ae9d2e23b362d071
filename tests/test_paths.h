// Where tests find their data: committed fixtures in the repo, ../shared/ beside it, and models
// that scripts/fetch_models.sh placed under models/ (not committed).
#pragma once
#include <cstdlib>
#include <filesystem>
#include <string>

namespace qlora::test {

inline std::string source_path(const std::string& rel) { return std::string(QLORA_SOURCE_DIR) + "/" + rel; }
inline std::string binary_path(const std::string& rel) { return std::string(QLORA_BINARY_DIR) + "/" + rel; }
// ../shared beside the repository, or $QLORA_SHARED_DIR.
inline std::string shared_path(const std::string& rel) {
  const char* env = std::getenv("QLORA_SHARED_DIR");
  std::string base = env ? env : std::string(QLORA_SOURCE_DIR) + "/../shared";
  return base + "/" + rel;
}
inline bool exists(const std::string& p) { return std::filesystem::exists(p); }

}  // namespace qlora::test
