// A one-line progress bar on stderr for long work (redrawn in place when stderr is a terminal,
// printed at most every ~10% otherwise so logs stay readable).
#pragma once
#include <chrono>
#include <string>

namespace qlora::cli {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total);
  void update(int64_t done, const std::string& extra = "");
  void finish();

 private:
  std::string label_;
  int64_t total_;
  int last_decile_ = -1;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace qlora::cli
