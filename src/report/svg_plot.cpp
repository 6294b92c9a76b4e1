// SVG line plots for `softlab report`: axis ranges and nice ticks, then plain text output.
// Axes work in "axis units": the value itself, or its log2 / log10 for log axes, so that
// ranges, ticks and the mapping to pixels are the same code for all three scales.
#include "report/svg_plot.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <iterator>
#include <limits>
#include <string_view>

namespace softlab::report {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Okabe-Ito without its yellow (too pale on white), plus three of Tol's "muted" colours:
// they stay distinguishable under the common colour-vision deficiencies.
constexpr const char* kPalette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00",
                                    "#56B4E9", "#000000", "#882255", "#999933", "#44AA99"};
// Once the colours run out, later series reuse them with a dash pattern.
constexpr const char* kDashes[] = {"", "6,3", "2,2", "8,3,2,3"};

constexpr double kFont = 12, kTickFont = 11, kLegendRow = 18;

// Two decimals via to_chars, so the output does not depend on the C locale.
std::string fmt(double v) {
  if (std::fabs(v) < 0.005) v = 0;  // never "-0.00"
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, 2);
  return std::string(buf, r.ptr);
}

// Like printf("%.*g"): 0.85, 128, 1e-05 (exponents only for very small or large values).
std::string fmt_g(double v, int digits) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general, digits);
  return std::string(buf, r.ptr);
}

std::string escape(std::string_view s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      // Other control characters are not allowed anywhere in an XML 1.0 document.
      default: out += (static_cast<unsigned char>(c) < 0x20) ? ' ' : c;
    }
  }
  return out;
}

// SVG has no text metrics, so guess: ~0.62 em per character (UTF-8 continuation bytes do
// not count), which errs on the wide side for sans-serif fonts.
double text_width(std::string_view s, double font_size) {
  size_t chars = 0;
  for (const unsigned char c : s) chars += (c & 0xC0) != 0x80;
  return static_cast<double>(chars) * 0.62 * font_size;
}

enum class Scale { linear, log2, log10 };

double to_axis(double v, Scale s) {
  if (!std::isfinite(v)) return kNaN;
  if (s == Scale::linear) return v;
  if (v <= 0) return kNaN;  // log axes: non-positive values are gaps
  return s == Scale::log2 ? std::log2(v) : std::log10(v);
}

// Extent of the finite values added; empty while lo > hi.
struct Extent {
  double lo = kInf, hi = -kInf;
  void add(double v) {
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  }
  bool empty() const { return lo > hi; }
};

struct Axis {
  double lo = 0, hi = 1;  // axis units, hi > lo
  std::vector<double> ticks;  // axis units
  std::vector<std::string> labels;
};

// Steps of 1, 2 or 5 x 10^k: the smallest step >= span/7 that gives at most 8 ticks once
// both ends are rounded out to multiples of it. Any step below span/2.8 gives >= 4 ticks,
// and the candidates grow by at most 2.5x, so the result has 4-8 ticks.
Axis linear_axis(double lo, double hi) {
  const double span = hi - lo;
  const double mag = std::pow(10.0, std::floor(std::log10(span / 7)));
  constexpr double kMantissa[] = {1, 2, 5};
  double step = mag, i0 = 0, i1 = 1;
  for (int k = 0; k < 12; ++k) {
    step = kMantissa[k % 3] * mag * std::pow(10.0, k / 3);
    if (step < span / 7) continue;
    // The slack keeps a value that is a multiple of step up to rounding on its tick.
    i0 = std::floor(lo / step + 1e-9);
    i1 = std::max(std::ceil(hi / step - 1e-9), i0 + 1);
    if (i1 - i0 + 1 <= 8) break;
  }
  Axis a{i0 * step, i1 * step, {}, {}};
  // Enough significant digits to tell neighbouring ticks apart and to write the integer part.
  const double top = std::floor(std::log10(std::max(std::fabs(a.lo), std::fabs(a.hi))));
  const double need = std::max(top - std::floor(std::log10(step)) + 1, top + 1);
  const int digits = static_cast<int>(std::clamp(need, 1.0, 17.0));
  for (double i = i0; i <= i1 && a.ticks.size() < 16; ++i) {
    const double v = std::fabs(i) < 0.5 ? 0.0 : i * step;  // an exact 0, not 1e-17
    a.ticks.push_back(v);
    a.labels.push_back(fmt_g(v, digits));
  }
  return a;
}

// Whole powers of the base at both ends; at most 8 labelled powers (thinned by a stride).
// A log10 axis spanning at most two decades also gets ticks at 2x and 5x.
Axis log_axis(double lo, double hi, Scale s) {
  Axis a{std::floor(lo + 1e-9), std::ceil(hi - 1e-9), {}, {}};
  if (a.hi <= a.lo) a.hi = a.lo + 1;
  const int first = static_cast<int>(a.lo), decades = static_cast<int>(a.hi - a.lo);
  const int stride = decades / 8 + 1;
  for (int e = first; e <= first + decades; e += stride) {
    if (s == Scale::log2) {
      a.ticks.push_back(e);
      a.labels.push_back(fmt_g(std::exp2(e), e >= -10 && e <= 52 ? 17 : 3));  // 128, 0.125
      continue;
    }
    for (const double m : {1.0, 2.0, 5.0}) {
      if (m > 1 && (decades > 2 || e == first + decades)) break;
      a.ticks.push_back(e + std::log10(m));
      a.labels.push_back(fmt_g(m * std::pow(10.0, e), std::clamp(e + 1, 1, 6)));  // 0.01, 500, 1e+06
    }
  }
  return a;
}

Axis make_axis(Extent e, Scale s) {
  // Keep hi - lo and the tick values finite (points beyond are drawn at the edge).
  const double limit = s == Scale::linear ? 1e300 : 300;
  e.lo = std::clamp(e.lo, -limit, limit), e.hi = std::clamp(e.hi, -limit, limit);
  if (e.hi <= e.lo) {  // one value: pad so the axis has a width and nothing divides by 0
    const double pad = s != Scale::linear ? 1.0 : (e.lo != 0 ? std::fabs(e.lo) * 0.1 : 1.0);
    e.lo -= pad, e.hi += pad;
  }
  return s == Scale::linear ? linear_axis(e.lo, e.hi) : log_axis(e.lo, e.hi, s);
}

// Fraction of the way along the axis; values beyond it (an error bar reaching zero on a
// log axis is -inf) are clamped to its ends.
double frac(const Axis& a, double t) { return (std::clamp(t, a.lo, a.hi) - a.lo) / (a.hi - a.lo); }

// One data point in axis units; x and y are NaN for a gap. lo/hi are the error bar's ends.
struct Point {
  double x = kNaN, y = kNaN, lo = kNaN, hi = kNaN;
  bool bar = false;
};

std::vector<Point> to_points(const Series& s, Scale sx, Scale sy, Extent& ex, Extent& ey) {
  std::vector<Point> pts;
  const size_t n = std::min(s.x.size(), s.y.size());
  const bool has_err = s.err.size() == s.y.size();
  for (size_t k = 0; k < n; ++k) {
    Point p;
    const double x = to_axis(s.x[k], sx), y = to_axis(s.y[k], sy);
    if (std::isfinite(x) && std::isfinite(y)) {
      p.x = x, p.y = y;
      ex.add(x), ey.add(y);
      const double e = has_err ? std::fabs(s.err[k]) : 0.0;
      if (std::isfinite(e) && e > 0) {
        p.bar = true;
        p.lo = to_axis(s.y[k] - e, sy), p.hi = to_axis(s.y[k] + e, sy);
        if (std::isnan(p.lo)) p.lo = -kInf;  // below zero on a log axis: to the bottom edge
        if (std::isnan(p.hi)) p.hi = kInf;   // overflow
        ey.add(p.lo), ey.add(p.hi);
      }
    }
    pts.push_back(p);
  }
  return pts;
}

std::string svg_open(int w, int h) {
  const std::string ws = std::to_string(w), hs = std::to_string(h);
  return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + ws + "\" height=\"" + hs +
         "\" viewBox=\"0 0 " + ws + " " + hs + "\" font-family=\"sans-serif\" font-size=\"" +
         fmt_g(kFont, 3) + "\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
}

std::string text(double x, double y, const char* cls, std::string_view s, const char* anchor = "middle",
                 const std::string& extra = "") {
  return std::string("<text class=\"") + cls + "\" x=\"" + fmt(x) + "\" y=\"" + fmt(y) + "\" text-anchor=\"" +
         anchor + "\"" + extra + ">" + escape(s) + "</text>\n";
}

std::string line(double x1, double y1, double x2, double y2, const std::string& extra = "") {
  return "<line x1=\"" + fmt(x1) + "\" y1=\"" + fmt(y1) + "\" x2=\"" + fmt(x2) + "\" y2=\"" + fmt(y2) + "\"" +
         extra + "/>\n";
}

std::string colour(size_t i) { return kPalette[i % std::size(kPalette)]; }

// Stroke attributes of series i, shared by its lines and its legend entry.
std::string stroke(size_t i) {
  const std::string dash = kDashes[(i / std::size(kPalette)) % std::size(kDashes)];
  return " stroke=\"" + colour(i) + "\" stroke-width=\"1.5\"" +
         (dash.empty() ? "" : " stroke-dasharray=\"" + dash + "\"");
}

std::string marker(double x, double y, size_t i, const char* cls) {
  return std::string("<circle class=\"") + cls + "\" cx=\"" + fmt(x) + "\" cy=\"" + fmt(y) +
         "\" r=\"2.5\" fill=\"" + colour(i) + "\"/>\n";
}

}  // namespace

std::string svg_line_plot(const PlotSpec& spec, const std::vector<Series>& series) {
  const Scale sx = spec.log_x ? Scale::log2 : Scale::linear;
  const Scale sy = spec.log_y ? Scale::log10 : Scale::linear;
  Extent ex, ey;
  std::vector<std::vector<Point>> points;
  for (const Series& s : series) points.push_back(to_points(s, sx, sy, ex, ey));

  const std::string title_font = " font-size=\"14\"", tick_font = " font-size=\"" + fmt_g(kTickFont, 3) + "\"";
  const double top = spec.title.empty() ? 16 : 36, bottom = 46, right = 16;
  if (ex.empty()) {
    const int w = std::max(spec.width, 120), h = std::max(spec.height, 80);
    std::string out = svg_open(w, h);
    if (!spec.title.empty()) out += text(w / 2.0, 22, "title", spec.title, "middle", title_font);
    return out + text(w / 2.0, h / 2.0, "message", "no data") + "</svg>\n";
  }
  const Axis ax = make_axis(ex, sx), ay = make_axis(ey, sy);

  // Margins: the left one holds the rotated y label and the widest y tick label; the
  // legend goes to the right of the plot area, as wide as its longest label needs.
  double tick_w = 0, label_w = 0;
  for (const auto& l : ay.labels) tick_w = std::max(tick_w, text_width(l, kTickFont));
  for (const Series& s : series) label_w = std::max(label_w, text_width(s.label, kFont));
  const double left = std::max(48.0, 30 + tick_w + 8);
  const double pw = std::max(40.0, spec.width - left - right), ph = std::max(40.0, spec.height - top - bottom);
  const double legend_x = left + pw + right, legend_w = 30 + label_w + 12;
  const double legend_h = top + 8 + kLegendRow * static_cast<double>(series.size());
  // The title starts at the left edge and may widen the canvas: a long one is never clipped.
  const double title_w = spec.title.empty() ? 0.0 : 8 + text_width(spec.title, 14) + 8;
  const int w = static_cast<int>(std::ceil(std::max(legend_x + legend_w, title_w)));
  const int h = static_cast<int>(std::ceil(std::max(top + ph + bottom, legend_h)));
  // Ticks end at the data's extremes, so an inset keeps markers and bar caps off the frame.
  constexpr double kInset = 6;
  auto px = [&](double t) { return left + kInset + frac(ax, t) * (pw - 2 * kInset); };
  auto py = [&](double t) { return top + ph - kInset - frac(ay, t) * (ph - 2 * kInset); };

  std::string out = svg_open(w, h);
  if (!spec.title.empty()) out += text(8, 22, "title", spec.title, "start", title_font);
  out += "<g class=\"grid\" stroke=\"#e6e6e6\" stroke-width=\"1\">\n";
  for (const double t : ax.ticks) out += line(px(t), top, px(t), top + ph);
  for (const double t : ay.ticks) out += line(left, py(t), left + pw, py(t));
  out += "</g>\n<rect class=\"frame\" x=\"" + fmt(left) + "\" y=\"" + fmt(top) + "\" width=\"" + fmt(pw) +
         "\" height=\"" + fmt(ph) + "\" fill=\"none\" stroke=\"#444\"/>\n";
  for (size_t i = 0; i < ax.ticks.size(); ++i)
    out += text(px(ax.ticks[i]), top + ph + 15, "tick-x", ax.labels[i], "middle", tick_font);
  for (size_t i = 0; i < ay.ticks.size(); ++i)
    out += text(left - 5, py(ay.ticks[i]) + 4, "tick-y", ay.labels[i], "end", tick_font);
  out += text(left + pw / 2, top + ph + 36, "x-label", spec.x_label);
  const std::string rotate = " transform=\"rotate(-90 " + fmt(14) + " " + fmt(top + ph / 2) + ")\"";
  out += text(14, top + ph / 2, "y-label", spec.y_label, "middle", rotate);

  for (size_t i = 0; i < series.size(); ++i) {
    out += "<g class=\"series-" + std::to_string(i) + "\">\n";
    // Error bars first, so that line and markers are drawn over them.
    for (const Point& p : points[i]) {
      if (!p.bar) continue;
      const std::string x = fmt(px(p.x)), x0 = fmt(px(p.x) - 3), x1 = fmt(px(p.x) + 3);
      const std::string y0 = fmt(py(p.lo)), y1 = fmt(py(p.hi));
      out += "<path class=\"errbar\" d=\"M" + x + " " + y0 + "V" + y1 + "M" + x0 + " " + y0 + "H" + x1 + "M" +
             x0 + " " + y1 + "H" + x1 + "\" stroke=\"" + colour(i) + "\" stroke-width=\"1\" fill=\"none\"/>\n";
    }
    // One polyline per run of finite points: a gap ends the run.
    std::string run;
    auto flush = [&] {
      if (run.empty()) return;
      out += "<polyline class=\"series\" points=\"" + run + "\" fill=\"none\"" + stroke(i) + "/>\n";
      run.clear();
    };
    for (const Point& p : points[i]) {
      if (std::isnan(p.x)) {
        flush();
        continue;
      }
      run += (run.empty() ? "" : " ") + fmt(px(p.x)) + "," + fmt(py(p.y));
    }
    flush();
    for (const Point& p : points[i])
      if (!std::isnan(p.x)) out += marker(px(p.x), py(p.y), i, "marker");
    out += "</g>\n";
  }

  out += "<g class=\"legend\">\n";
  for (size_t i = 0; i < series.size(); ++i) {
    const double y = top + 8 + kLegendRow * static_cast<double>(i);
    out += line(legend_x, y, legend_x + 24, y, stroke(i)) + marker(legend_x + 12, y, i, "legend-marker");
    out += text(legend_x + 30, y + 4, "legend-label", series[i].label, "start");
  }
  return out + "</g>\n</svg>\n";
}

}  // namespace softlab::report
