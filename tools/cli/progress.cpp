// Progress bar with rate and ETA.
#include "progress.h"

#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>

namespace qlora::cli {

ProgressBar::ProgressBar(std::string label, int64_t total)
    : label_(std::move(label)), total_(std::max<int64_t>(total, 1)), tty_(isatty(2)),
      start_(std::chrono::steady_clock::now()) {}

void ProgressBar::update(int64_t done, const std::string& extra) {
  const double frac = std::min(1.0, double(done) / double(total_));
  const int decile = int(frac * 10);
  if (!tty_ && decile == last_decile_ && done < total_) return;
  last_decile_ = decile;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta = done > 0 ? elapsed * (double(total_) / double(done) - 1.0) : 0.0;
  constexpr int kWidth = 30;
  const int filled = int(frac * kWidth);
  const std::string bar = std::string(size_t(filled), '#') + std::string(size_t(kWidth - filled), '.');
  fmt::print(stderr, "{}{} [{}] {}/{} {:.0f}s elapsed, ETA {:.0f}s {}{}", tty_ ? "\r" : "", label_, bar, done, total_,
             elapsed, eta, extra, tty_ ? "" : "\n");
}

void ProgressBar::finish() {
  if (tty_) fmt::print(stderr, "\n");
}

}  // namespace qlora::cli
