// Renders RunReport as HTML with hand-built SVG plots (a few hundred points at most; no library).
#include "report_html.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace qlora::cli {

namespace {

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string tick_label(double v) {
  const double a = std::abs(v);
  if (a != 0 && (a < 1e-3 || a >= 1e5)) return fmt::format("{:.1e}", v);
  return fmt::format("{:.4g}", v);
}

}  // namespace

std::string svg_line_plot(const std::string& title, const std::string& y_label,
                          const std::vector<std::pair<double, double>>& series,
                          const std::vector<std::pair<double, double>>& dots, const std::string& dots_label) {
  constexpr double kW = 460, kH = 260, kLeft = 64, kRight = 14, kTop = 28, kBottom = 40;
  double x0 = std::numeric_limits<double>::max(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const auto* s : {&series, &dots})
    for (const auto& [x, y] : *s) {
      if (!std::isfinite(y)) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" role=\"img\">"
      "<title>{}</title><text x=\"{}\" y=\"18\" class=\"t\">{}</text>",
      kW, kH, kW, kH, escape(title), kLeft, escape(title));
  if (x0 > x1) return svg + fmt::format("<text x=\"{}\" y=\"{}\">no data yet</text></svg>", kLeft, kH / 2);
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + std::max(1e-9, std::abs(y0) * 0.1), y0 -= (y1 - y0);
  const double pad = (y1 - y0) * 0.05;
  y0 -= pad, y1 += pad;
  auto px = [&](double x) { return kLeft + (x - x0) / (x1 - x0) * (kW - kLeft - kRight); };
  auto py = [&](double y) { return kTop + (y1 - y) / (y1 - y0) * (kH - kTop - kBottom); };
  // Axes and ticks.
  svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" class=\"frame\"/>", kLeft, kTop,
                     kW - kLeft - kRight, kH - kTop - kBottom);
  for (int i = 0; i <= 4; ++i) {
    const double yv = y0 + (y1 - y0) * i / 4, xv = x0 + (x1 - x0) * i / 4;
    svg += fmt::format("<line x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{:.1f}\" y2=\"{:.1f}\" class=\"grid\"/>", kLeft,
                       kW - kRight, py(yv), py(yv));
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" class=\"yt\">{}</text>", kLeft - 4, py(yv) + 4, tick_label(yv));
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" class=\"xt\">{}</text>", px(xv), kH - kBottom + 16,
                       tick_label(std::round(xv)));
  }
  svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" class=\"xt\">step</text>", (kLeft + kW - kRight) / 2, kH - 6);
  svg += fmt::format("<text transform=\"translate(14 {:.1f}) rotate(-90)\" class=\"xt\">{}</text>",
                     (kTop + kH - kBottom) / 2, escape(y_label));
  if (!series.empty()) {
    std::string points;
    for (const auto& [x, y] : series)
      if (std::isfinite(y)) points += fmt::format("{:.1f},{:.1f} ", px(x), py(y));
    svg += fmt::format("<polyline points=\"{}\" class=\"line\"/>", points);
  }
  for (const auto& [x, y] : dots)
    if (std::isfinite(y)) svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3.5\" class=\"dot\"/>", px(x), py(y));
  if (!dots.empty() && !dots_label.empty())
    svg += fmt::format("<circle cx=\"{}\" cy=\"14\" r=\"3.5\" class=\"dot\"/><text x=\"{}\" y=\"18\">{}</text>",
                       kW - 120, kW - 112, escape(dots_label));
  return svg + "</svg>";
}

std::string render_report_html(const RunReport& r) {
  std::vector<std::pair<double, double>> loss, lr, tps, rss, val;
  for (const StepPoint& s : r.steps) {
    loss.emplace_back(s.step, s.loss), lr.emplace_back(s.step, s.lr);
    tps.emplace_back(s.step, s.tokens_per_s), rss.emplace_back(s.step, s.rss_mb);
  }
  for (const EvalPoint& e : r.evals) val.emplace_back(e.step, e.loss);
  std::string html = fmt::format(R"(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{0}</title>
<style>
body{{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}}
h1{{font-size:20px}} table{{border-collapse:collapse}} td{{padding:2px 12px 2px 0;vertical-align:top}}
td:first-child{{color:#666}} .plots{{display:flex;flex-wrap:wrap;gap:12px}}
svg{{background:#fff;border:1px solid #ddd}} .t{{font-weight:600}} .frame{{fill:none;stroke:#999}}
.grid{{stroke:#eee}} .yt{{text-anchor:end;font-size:11px}} .xt{{text-anchor:middle;font-size:11px}}
.line{{fill:none;stroke:#1f6feb;stroke-width:1.6}} .dot{{fill:#d1242f}}
pre{{white-space:pre-wrap;background:#f6f8fa;padding:8px;border-radius:4px}}
</style></head><body>
<h1>{0}</h1>
<table>
)",
                                 escape(r.title));
  for (const auto& [k, v] : r.facts) html += fmt::format("<tr><td>{}</td><td>{}</td></tr>\n", escape(k), escape(v));
  html += "</table>\n<h2>Curves</h2><div class=\"plots\">\n";
  html += svg_line_plot("Loss (line: train, dots: validation)", "loss", loss, val, "validation");
  html += svg_line_plot("Learning rate", "lr", lr);
  html += svg_line_plot("Throughput", "tokens/s", tps);
  html += svg_line_plot("Memory (resident set)", "MiB", rss);
  html += "</div>\n";
  if (!r.samples.empty()) {
    html += "<h2>Sample generations</h2>\n";
    for (const SampleText& s : r.samples)
      html += fmt::format("<h3>Prompt</h3><pre>{}</pre><h3>Before</h3><pre>{}</pre><h3>After</h3><pre>{}</pre>\n",
                          escape(s.prompt), escape(s.before), escape(s.after));
  }
  html += fmt::format("<h2>Configuration</h2><pre>{}</pre>\n</body></html>\n", escape(r.config_yaml));
  return html;
}

}  // namespace qlora::cli
