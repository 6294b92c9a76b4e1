#pragma once
// A small, dependency-free SVG line-plot writer for `softlab report`: one call turns a
// few series (e.g. accuracy or time against sequence length, one series per attention
// variant) into a standalone SVG document with nice axis ticks, error bars, gaps for
// missing values and a legend. It never fails: bad points become gaps, and with nothing
// finite to draw the document says "no data". Same input, same bytes.
#include <string>
#include <vector>

namespace softlab::report {

struct Series {
  std::string label;         // legend entry
  std::vector<double> x, y;  // same length (extra points of the longer one are ignored);
                             // a NaN y (or x) breaks the line there (gap)
  std::vector<double> err;   // empty, or same length as y: draw error bars y±err
};

struct PlotSpec {
  std::string title, x_label, y_label;
  bool log_x = false;  // log2 axis for x (sequence lengths 64,128,...): ticks at the powers of two in range
  bool log_y = false;  // log10 axis
  // The size without the legend: the legend is added to the right of it, and the canvas
  // grows (wider, and taller for many series) so that no legend entry is clipped.
  int width = 640, height = 400;
};

// A complete standalone SVG document (starts with "<svg", xmlns set, ends with "</svg>\n").
// Each run of consecutive finite points is one <polyline class="series">, every finite
// point gets a <circle class="marker">, every error bar is a <path class="errbar">.
std::string svg_line_plot(const PlotSpec& spec, const std::vector<Series>& series);

}  // namespace softlab::report
