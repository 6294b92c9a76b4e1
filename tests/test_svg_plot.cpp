// The SVG line-plot writer of `softlab report`: document structure, one polyline per run
// of finite points, escaping, degenerate and empty input, nice and log ticks, error bars,
// the legend and byte-for-byte determinism. Suite: SvgPlot.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "report/svg_plot.hpp"

using namespace softlab::report;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

// The opening tags "<tag ...>" of every element `tag` with class `cls`, in document order.
std::vector<std::string> elements(const std::string& svg, const std::string& tag, const std::string& cls) {
  std::vector<std::string> out;
  const std::string open = "<" + tag + " class=\"" + cls + "\"";
  for (size_t p = svg.find(open); p != std::string::npos; p = svg.find(open, p + 1))
    out.push_back(svg.substr(p, svg.find('>', p) - p + 1));
  return out;
}

std::string attr(const std::string& element, const std::string& name) {
  const std::string key = " " + name + "=\"";
  const size_t b = element.find(key);
  if (b == std::string::npos) return "";
  const size_t v = b + key.size();
  return element.substr(v, element.find('"', v) - v);
}

// The contents of <text class="cls"> elements.
std::vector<std::string> texts(const std::string& svg, const std::string& cls) {
  std::vector<std::string> out;
  const std::string open = "<text class=\"" + cls + "\"";
  for (size_t p = svg.find(open); p != std::string::npos; p = svg.find(open, p + 1)) {
    const size_t b = svg.find('>', p) + 1;
    out.push_back(svg.substr(b, svg.find("</text>", b) - b));
  }
  return out;
}

// Points of each series polyline, as "x,y" pairs.
std::vector<std::vector<std::string>> polylines(const std::string& svg) {
  std::vector<std::vector<std::string>> out;
  for (const auto& e : elements(svg, "polyline", "series")) {
    std::istringstream in(attr(e, "points"));
    out.emplace_back();
    for (std::string pt; in >> pt;) out.back().push_back(pt);
  }
  return out;
}

// "x,y" with both written as digits, a point and exactly two decimals.
bool two_decimals(const std::string& pt) {
  const size_t comma = pt.find(',');
  if (comma == std::string::npos) return false;
  for (const std::string& n : {pt.substr(0, comma), pt.substr(comma + 1)}) {
    const size_t dot = n.find('.');
    if (dot == std::string::npos || dot == 0 || n.size() - dot != 3) return false;
    if (n.find_first_not_of("0123456789.") != std::string::npos) return false;
  }
  return true;
}

// Every number in the output must be finite: to_chars and printf both write "nan"/"inf".
void expect_finite(const std::string& svg) {
  EXPECT_EQ(svg.find("nan"), std::string::npos) << svg;
  EXPECT_EQ(svg.find("inf"), std::string::npos) << svg;
}

void expect_document(const std::string& svg) {
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
  ASSERT_GE(svg.size(), 7u);
  EXPECT_EQ(svg.substr(svg.size() - 7), "</svg>\n");
  EXPECT_EQ(count(svg, "<svg"), 1u);
  EXPECT_EQ(count(svg, "</svg>"), 1u);
  EXPECT_EQ(count(svg, "<g"), count(svg, "</g>"));
  EXPECT_EQ(count(svg, "<text"), count(svg, "</text>"));
  EXPECT_EQ(count(svg, "<"), count(svg, ">"));  // escaping keeps text free of brackets
  expect_finite(svg);
}

std::vector<double> labels_as_numbers(const std::string& svg, const std::string& cls) {
  std::vector<double> out;
  for (const auto& l : texts(svg, cls)) out.push_back(std::strtod(l.c_str(), nullptr));
  return out;
}

// Linear ticks: 4-8 of them, equally spaced by 1, 2 or 5 x 10^k, covering [lo, hi].
void expect_nice(const std::vector<double>& t, double lo, double hi) {
  ASSERT_GE(t.size(), 4u);
  ASSERT_LE(t.size(), 8u);
  const double step = (t.back() - t.front()) / static_cast<double>(t.size() - 1);
  const double mant = step / std::pow(10.0, std::floor(std::log10(step) + 1e-9));
  EXPECT_TRUE(std::fabs(mant - 1) < 1e-6 || std::fabs(mant - 2) < 1e-6 || std::fabs(mant - 5) < 1e-6)
      << "step " << step;
  // Ticks far from zero are only as exact as doubles of their magnitude.
  const double tol = step * 1e-6 + std::max(std::fabs(t.front()), std::fabs(t.back())) * 1e-14;
  for (size_t i = 1; i < t.size(); ++i) EXPECT_NEAR(t[i] - t[i - 1], step, tol);
  EXPECT_LE(t.front(), lo + tol);
  EXPECT_GE(t.back(), hi - tol);
}

}  // namespace

TEST(SvgPlot, DocumentHasOnePolylinePerSeriesAndAMarkerPerPoint) {
  PlotSpec spec{"accuracy", "steps", "acc"};
  const std::vector<Series> s = {{"soft", {1, 2, 3, 4}, {0.1, 0.5, 0.7, 0.8}, {}},
                                 {"linear", {1, 2, 3}, {0.2, 0.4, 0.6}, {}}};
  const std::string svg = svg_line_plot(spec, s);
  expect_document(svg);
  const auto lines = polylines(svg);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].size(), 4u);
  EXPECT_EQ(lines[1].size(), 3u);
  EXPECT_EQ(elements(svg, "circle", "marker").size(), 7u);
  // Coordinates are short: two decimals.
  for (const auto& pt : lines[0]) EXPECT_TRUE(two_decimals(pt)) << pt;
  EXPECT_NE(attr(elements(svg, "polyline", "series")[0], "stroke"),
            attr(elements(svg, "polyline", "series")[1], "stroke"));
  EXPECT_EQ(texts(svg, "title"), std::vector<std::string>{"accuracy"});
  EXPECT_EQ(texts(svg, "x-label"), std::vector<std::string>{"steps"});
  EXPECT_EQ(texts(svg, "y-label"), std::vector<std::string>{"acc"});
  EXPECT_EQ(texts(svg, "legend-label"), (std::vector<std::string>{"soft", "linear"}));
}

TEST(SvgPlot, GapsSplitASeriesIntoSeveralPolylines) {
  const std::vector<Series> s = {{"a", {1, 2, 3, 4, 5, 6, 7}, {1, 2, kNaN, 4, 5, 6, 7}, {}},
                                 {"b", {1, kNaN, 3, 4}, {1, 2, 3, 4}, {}}};
  const std::string svg = svg_line_plot({}, s);
  expect_document(svg);
  const auto lines = polylines(svg);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0].size(), 2u);
  EXPECT_EQ(lines[1].size(), 4u);
  EXPECT_EQ(lines[2].size(), 1u);  // a lone point is still its own run (and has a marker)
  EXPECT_EQ(lines[3].size(), 2u);
  EXPECT_EQ(elements(svg, "circle", "marker").size(), 6u + 3u);
}

TEST(SvgPlot, InfinitiesAndMismatchedLengthsAreGapsNotCrashes) {
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<Series> s = {{"a", {1, 2, 3, 4, 5}, {1, inf, 3}, {}},  // y shorter than x
                                 {"b", {1, 2}, {1, 2}, {0.5}}};           // err of the wrong length: no bars
  const std::string svg = svg_line_plot({}, s);
  expect_document(svg);
  const auto lines = polylines(svg);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0].size(), 1u);
  EXPECT_EQ(lines[1].size(), 1u);
  EXPECT_EQ(lines[2].size(), 2u);
  EXPECT_EQ(count(svg, "class=\"errbar\""), 0u);
}

TEST(SvgPlot, EscapesEveryText) {
  PlotSpec spec{"a<b & \"c\" 'd'>", "x<", "y&"};
  const std::string svg = svg_line_plot(spec, {{"<script>&'\"", {1, 2}, {3, 4}, {}}});
  expect_document(svg);
  EXPECT_EQ(texts(svg, "title"), std::vector<std::string>{"a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;"});
  EXPECT_EQ(texts(svg, "x-label"), std::vector<std::string>{"x&lt;"});
  EXPECT_EQ(texts(svg, "y-label"), std::vector<std::string>{"y&amp;"});
  EXPECT_EQ(texts(svg, "legend-label"), std::vector<std::string>{"&lt;script&gt;&amp;&apos;&quot;"});
  EXPECT_EQ(svg.find("<script"), std::string::npos);
  // And a control character, which XML does not allow at all, does not get through.
  EXPECT_EQ(svg_line_plot({"bell\x07", "", ""}, {}).find('\x07'), std::string::npos);
}

TEST(SvgPlot, DegenerateRangesGiveFiniteCoordinates) {
  const std::vector<std::vector<Series>> cases = {
      {{"one point", {3}, {0.5}, {}}},
      {{"flat", {1, 2, 3}, {2, 2, 2}, {}}},
      {{"zeros", {0, 0}, {0, 0}, {}}},
      {{"vertical", {5, 5, 5}, {1, 2, 3}, {}}},
      {{"tiny", {1, 2}, {1e-12, 1.0000000001e-12}, {}}},
      {{"huge", {1, 2}, {-1e300, 1e300}, {}}},
      {{"extreme", {-1.7e308, 1.7e308}, {-1.7e308, 1.7e308}, {1e308, 1e308}}},
      {{"subnormal", {1e-320, 2e-320}, {1e-320, 3e-320}, {}}},
  };
  for (const auto& s : cases) {
    SCOPED_TRACE(s[0].label);
    for (const bool log : {false, true}) {
      PlotSpec spec;
      spec.log_x = spec.log_y = log;
      const std::string svg = svg_line_plot(spec, s);
      expect_document(svg);
      // On log axes zeros and negatives are gaps; otherwise every point is drawn.
      if (!log || s[0].label != "zeros") {
        EXPECT_GE(elements(svg, "circle", "marker").size(), 1u);
      }
      if (!log) {
        EXPECT_GE(texts(svg, "tick-y").size(), 4u);
      }
    }
  }
}

TEST(SvgPlot, NoDataStillGivesAValidDocument) {
  const std::vector<std::vector<Series>> cases = {
      {}, {{"empty", {}, {}, {}}}, {{"all nan", {1, 2}, {kNaN, kNaN}, {}}}};
  for (const auto& s : cases) {
    const std::string svg = svg_line_plot({"t", "", ""}, s);
    expect_document(svg);
    EXPECT_EQ(texts(svg, "message"), std::vector<std::string>{"no data"});
    EXPECT_EQ(count(svg, "<polyline"), 0u);
  }
  PlotSpec log;
  log.log_y = true;
  const std::string svg = svg_line_plot(log, {{"non-positive", {1, 2}, {0, -3}, {}}});
  expect_document(svg);
  EXPECT_EQ(texts(svg, "message"), std::vector<std::string>{"no data"});
}

TEST(SvgPlot, LinearTicksAreNiceAndCompact) {
  const std::string svg = svg_line_plot({}, {{"a", {0, 10}, {0.8, 0.9}, {}}});
  EXPECT_EQ(texts(svg, "tick-y"), (std::vector<std::string>{"0.8", "0.82", "0.84", "0.86", "0.88", "0.9"}));
  EXPECT_EQ(texts(svg, "tick-x"), (std::vector<std::string>{"0", "2", "4", "6", "8", "10"}));
  const std::string small = svg_line_plot({}, {{"a", {0, 1}, {1e-5, 5e-5}, {}}});
  EXPECT_EQ(texts(small, "tick-y").front(), "1e-05");
  const std::string big = svg_line_plot({}, {{"a", {0, 1}, {100, 1000}, {}}});
  EXPECT_EQ(texts(big, "tick-y").back(), "1000");
  // A sweep over spans and offsets, including negative ranges.
  for (double lo : {-1234.5, -1.0, 0.0, 0.003, 7.0, 1e6}) {
    for (double span : {1e-4, 0.013, 0.5, 1.0, 3.0, 7.7, 99.0, 12345.0}) {
      SCOPED_TRACE(std::to_string(lo) + " + " + std::to_string(span));
      const std::string s = svg_line_plot({}, {{"a", {lo, lo + span}, {lo, lo + span}, {}}});
      expect_document(s);
      expect_nice(labels_as_numbers(s, "tick-x"), lo, lo + span);
    }
  }
}

TEST(SvgPlot, LogXTicksArePowersOfTwo) {
  PlotSpec spec;
  spec.log_x = true;
  const std::string svg = svg_line_plot(spec, {{"a", {64, 128, 256, 512, 1024}, {1, 2, 3, 4, 5}, {}}});
  expect_document(svg);
  EXPECT_EQ(texts(svg, "tick-x"), (std::vector<std::string>{"64", "128", "256", "512", "1024"}));
  // Equal powers of two are equally spaced.
  const auto lines = polylines(svg);
  ASSERT_EQ(lines.size(), 1u);
  ASSERT_EQ(lines[0].size(), 5u);
  std::vector<double> xs;
  for (const auto& p : lines[0]) xs.push_back(std::strtod(p.c_str(), nullptr));
  for (size_t i = 2; i < xs.size(); ++i) EXPECT_NEAR(xs[i] - xs[i - 1], xs[1] - xs[0], 0.02);
  // Non-positive x are gaps on a log axis; the range only comes from the positive ones.
  const std::string gap = svg_line_plot(spec, {{"a", {0, 64, -1, 128, 256}, {1, 2, 3, 4, 5}, {}}});
  expect_document(gap);
  EXPECT_EQ(polylines(gap).size(), 2u);
  EXPECT_EQ(texts(gap, "tick-x"), (std::vector<std::string>{"64", "128", "256"}));
  // A wide range keeps at most 8 labels, all powers of two.
  const std::string wide = svg_line_plot(spec, {{"a", {1, 1 << 20}, {1, 2}, {}}});
  const auto ticks = labels_as_numbers(wide, "tick-x");
  EXPECT_LE(ticks.size(), 8u);
  EXPECT_GE(ticks.size(), 4u);
  for (double t : ticks) EXPECT_EQ(std::exp2(std::round(std::log2(t))), t);
}

TEST(SvgPlot, LogYTicksArePowersOfTen) {
  PlotSpec spec;
  spec.log_y = true;
  const std::string svg = svg_line_plot(spec, {{"loss", {1, 2, 3}, {0.02, 0.5, 30}, {}}});
  expect_document(svg);
  EXPECT_EQ(texts(svg, "tick-y"), (std::vector<std::string>{"0.01", "0.1", "1", "10", "100"}));
  const std::string narrow = svg_line_plot(spec, {{"loss", {1, 2}, {0.3, 0.9}, {}}});
  EXPECT_EQ(texts(narrow, "tick-y"), (std::vector<std::string>{"0.1", "0.2", "0.5", "1"}));
}

TEST(SvgPlot, ErrorBarsWhenErrGiven) {
  const std::vector<Series> with = {{"a", {1, 2, 3}, {1, kNaN, 3}, {0.5, 0.5, 0.25}}};
  const std::string svg = svg_line_plot({}, with);
  expect_document(svg);
  EXPECT_EQ(count(svg, "class=\"errbar\""), 2u);  // none at the gap
  EXPECT_EQ(count(svg_line_plot({}, {{"a", {1, 2, 3}, {1, 2, 3}, {}}}), "class=\"errbar\""), 0u);
  // The y range includes y±err: 0.5 and 3.25 lie inside the ticks.
  const auto t = labels_as_numbers(svg, "tick-y");
  ASSERT_FALSE(t.empty());
  EXPECT_LE(t.front(), 0.5);
  EXPECT_GE(t.back(), 3.25);
  // On a log axis a bar reaching zero or below is cut at the bottom edge, not dropped.
  PlotSpec log;
  log.log_y = true;
  const std::string lsvg = svg_line_plot(log, {{"a", {1, 2}, {1, 10}, {2, 1}}});
  expect_document(lsvg);
  EXPECT_EQ(count(lsvg, "class=\"errbar\""), 2u);
}

TEST(SvgPlot, ColoursCycleAndDashesTakeOverBeyondThePalette) {
  std::vector<Series> s;
  for (int i = 0; i < 12; ++i) s.push_back({"s" + std::to_string(i), {0, 1}, {double(i), double(i + 1)}, {}});
  const std::string svg = svg_line_plot({}, s);
  expect_document(svg);
  const auto lines = elements(svg, "polyline", "series");
  ASSERT_EQ(lines.size(), 12u);
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_EQ(attr(lines[i], "stroke-dasharray"), "");
    for (size_t j = 0; j < i; ++j) EXPECT_NE(attr(lines[i], "stroke"), attr(lines[j], "stroke"));
  }
  EXPECT_EQ(attr(lines[10], "stroke"), attr(lines[0], "stroke"));
  EXPECT_NE(attr(lines[10], "stroke-dasharray"), "");
  EXPECT_EQ(texts(svg, "legend-label").size(), 12u);
}

// A report's titles are long ("Claim 5: ... : accuracy against evaluation length"): the
// title starts at the left edge and widens the canvas instead of being clipped on both sides.
TEST(SvgPlot, LongTitleStartsAtTheLeftAndWidensTheCanvas) {
  PlotSpec spec;
  spec.title = std::string(150, 'T');
  const std::string svg = svg_line_plot(spec, {{"s", {0, 1}, {0, 1}, {}}});
  expect_document(svg);
  const auto title = elements(svg, "text", "title");
  ASSERT_EQ(title.size(), 1u);
  EXPECT_EQ(attr(title[0], "text-anchor"), "start");
  const double x = std::stod(attr(title[0], "x"));
  EXPECT_GE(x, 0.0);
  const double width = std::stod(attr(svg.substr(0, svg.find('>')), "width"));
  EXPECT_GT(width - x, 150 * 0.55 * 14);
}

TEST(SvgPlot, LegendWidensTheCanvasForLongLabels) {
  PlotSpec spec;
  const std::string label(120, 'W');
  const std::string svg = svg_line_plot(spec, {{label, {0, 1}, {0, 1}, {}}});
  expect_document(svg);
  const std::string root = svg.substr(0, svg.find('>'));
  const double width = std::stod(attr(root, "width"));
  const auto legend = elements(svg, "text", "legend-label");
  ASSERT_EQ(legend.size(), 1u);
  // 120 characters at 12px need well over 600px to the right of the label's start.
  EXPECT_GT(width - std::stod(attr(legend[0], "x")), 120 * 0.55 * 12);
  EXPECT_GT(width, spec.width);
  // Many series make the canvas taller so the last legend entry fits.
  std::vector<Series> many(40, Series{"s", {0, 1}, {0, 1}, {}});
  const std::string tall = svg_line_plot(spec, many);
  const double height = std::stod(attr(tall.substr(0, tall.find('>')), "height"));
  EXPECT_GT(height, std::stod(attr(elements(tall, "text", "legend-label").back(), "y")));
}

TEST(SvgPlot, SameInputSameBytes) {
  PlotSpec spec{"t", "x", "y", true, true};
  const std::vector<Series> s = {{"a", {64, 128, 256}, {0.1, 0.01, 0.001}, {0.01, 0.001, 0.0001}},
                                 {"b", {64, 128, 256}, {0.2, kNaN, 0.002}, {}}};
  const std::string first = svg_line_plot(spec, s);
  EXPECT_EQ(first, svg_line_plot(spec, s));
  expect_document(first);
}
