// MetricsLog: fresh and resumed metrics.jsonl. See metrics_log.h.
#include "train/metrics_log.h"

#include <fmt/core.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/atomic_file.h"

namespace qlora {

MetricsLog::MetricsLog(std::unique_ptr<AppendFile> file, std::vector<nlohmann::json> kept,
                       std::vector<std::string> warnings)
    : file_(std::move(file)), kept_(std::move(kept)), warnings_(std::move(warnings)) {}
MetricsLog::MetricsLog(MetricsLog&&) noexcept = default;
MetricsLog& MetricsLog::operator=(MetricsLog&&) noexcept = default;
MetricsLog::~MetricsLog() = default;

MetricsLog MetricsLog::create(const std::string& path) {
  write_file_atomically(path, "", "train");
  return MetricsLog(std::make_unique<AppendFile>(path, "train"), {}, {});
}

MetricsLog MetricsLog::resume(const std::string& path, int64_t step) {
  std::vector<nlohmann::json> kept;
  std::vector<std::string> warnings;
  std::string text;
  if (std::filesystem::exists(path)) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("train", "cannot read {}", path);
    std::string line;
    int64_t number = 0;
    while (std::getline(in, line)) {
      ++number;
      if (line.empty()) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception&) {
        warnings.push_back(fmt::format("{}: line {} is not JSON (a write cut short?); dropped", path, number));
        continue;
      }
      if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) {
        warnings.push_back(fmt::format("{}: line {} has no integer \"step\"; dropped", path, number));
        continue;
      }
      const int64_t s = j["step"].get<int64_t>();
      if (s < step || (s == step && !j.contains("val_loss"))) {
        text += j.dump() + "\n";
        kept.push_back(std::move(j));
      }
    }
  }
  write_file_atomically(path, text, "train");
  return MetricsLog(std::make_unique<AppendFile>(path, "train"), std::move(kept), std::move(warnings));
}

void MetricsLog::write(const nlohmann::json& line) { file_->append(line.dump() + "\n"); }

void MetricsLog::sync() { file_->sync(); }

}  // namespace qlora
