// Line charts drawn into an RgbImage (runtime/png.h) for bfm plot: a title, a framed plot area with a light grid,
// tick marks and compact tick labels on both axes, a linear or logarithmic y axis, several series in distinct
// colours (lines of a given width, optional round markers), and a legend to the right of the plot area. Text uses a
// built-in 5x7 bitmap font (printable ASCII), so no font or plotting library is needed.
#pragma once

#include <string>
#include <vector>

#include "runtime/png.h"

namespace bfm::launch {

struct Series {
  std::string name;            // the legend entry
  std::vector<double> x, y;    // same length, x ascending; a non-finite y (or y <= 0 on a log axis) breaks the line
  runtime::Rgb colour;
  int line_width = 1;          // pixels; 0 draws no line (markers only)
  bool markers = false;        // a filled dot at every point
};

struct Chart {
  std::string title, x_label, y_label;
  bool log_y = false;
  std::vector<Series> series;
};

// Draws chart into the rectangle at (left, top) of width x height pixels of image. The series are drawn in order,
// so the last one is on top; everything is clipped to the plot area.
void draw_chart(runtime::RgbImage& image, int left, int top, int width, int height, const Chart& chart);

// True when the positive finite values of these series span more than a factor of 10: the case for a log axis.
bool spans_more_than_a_decade(const std::vector<Series>& series);

// The label of an axis tick at v where ticks are step apart: as few characters as show the step, e.g. "0", "0.25",
// "12k", "1.5M", "3e-4".
std::string tick_label(double v, double step);

// Text in the 5x7 font, each font pixel drawn as scale x scale pixels; (x, y) is the top-left corner. Characters
// outside printable ASCII are drawn as '?'. A vertical text reads bottom to top and (x, y) is its bottom-left corner.
void draw_text(runtime::RgbImage& image, int x, int y, const std::string& text, runtime::Rgb colour, int scale = 1,
               bool vertical = false);
int text_width(const std::string& text, int scale = 1);

}  // namespace bfm::launch
