// report.html for a training run: one self-contained file (inline SVG and CSS, no scripts, no
// network) with plots of train/validation loss, learning rate, tokens/s and memory per step, the
// before/after summary and sample generations. Rewritten atomically during the run, so a browser
// can be pointed at it at any time. Tested in tests/e2e/test_cli_train.cpp (structure) and by
// hand in headless Chromium.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace qlora::cli {

struct StepPoint {
  double step = 0, loss = 0, lr = 0, grad_norm = 0, tokens_per_s = 0, rss_mb = 0;
};
struct EvalPoint {
  double step = 0, loss = 0;
};
struct SampleText {
  std::string prompt, before, after;
};

struct RunReport {
  std::string title;
  std::vector<std::pair<std::string, std::string>> facts;  // (label, value) rows of the summary table
  std::vector<StepPoint> steps;
  std::vector<EvalPoint> evals;
  std::vector<SampleText> samples;
  std::string config_yaml;
};

std::string render_report_html(const RunReport& report);
// A line plot as an SVG element: one or two series (the second drawn as dots), axes with ticks.
std::string svg_line_plot(const std::string& title, const std::string& y_label,
                          const std::vector<std::pair<double, double>>& series,
                          const std::vector<std::pair<double, double>>& dots = {}, const std::string& dots_label = "");

}  // namespace qlora::cli
