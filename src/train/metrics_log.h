// metrics.jsonl of a training run: one JSON object a line, {"step": N, "loss": ...} after each
// optimizer step and {"step": N, "val_loss": ...} after each evaluation. A resumed run continues
// the log of the run it resumes, cut back to the checkpoint's step, so every step appears once
// however often the run was interrupted. Every write is checked (io/atomic_file.h AppendFile).
// Tested in tests/unit/test_metrics_log.cpp and tests/e2e/test_cli_train.cpp (resume).
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace qlora {

class AppendFile;

class MetricsLog {
 public:
  // A fresh log: an existing file is replaced by an empty one.
  static MetricsLog create(const std::string& path);
  // The log of a run resumed at `step`: keeps the lines of steps before `step` and the training
  // line of `step` itself (the resumed run evaluates at `step` again and writes that line anew);
  // drops every later line and lines that do not parse (the torn last line of a killed run; each
  // dropped unparsable line is reported in warnings()). The kept lines replace the file atomically.
  static MetricsLog resume(const std::string& path, int64_t step);

  MetricsLog(MetricsLog&&) noexcept;
  MetricsLog& operator=(MetricsLog&&) noexcept;
  ~MetricsLog();

  // Appends `line` and a newline. Not fsynced per line: a kill loses nothing the kernel has, and
  // a power cut at worst loses lines after the last checkpoint, which a resume cuts anyway.
  void write(const nlohmann::json& line);
  // fsync of what was written (end of the run).
  void sync();

  const std::vector<nlohmann::json>& kept() const { return kept_; }
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  MetricsLog(std::unique_ptr<AppendFile> file, std::vector<nlohmann::json> kept, std::vector<std::string> warnings);
  std::unique_ptr<AppendFile> file_;
  std::vector<nlohmann::json> kept_;
  std::vector<std::string> warnings_;
};

}  // namespace qlora
