// The chart renderer behind bfm plot. Layout of one chart, in its rectangle:
//
//   title (2x font), centred over the plot area
//   y label (vertical) | y tick labels | plot area (frame, grid, series) | legend
//                                        x tick labels, then the x label
//
// Data map to pixels linearly (or in log10 for a log y axis) over the data's range padded by a few per cent. Lines
// are Bresenham segments between consecutive points, stamped with a square brush of the series' width.
#include "launch/plot/charts.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>

namespace bfm::launch {

using runtime::Rgb;
using runtime::RgbImage;

namespace {

// The classic 5x7 font for ASCII 32..126: five columns per glyph, bit 0 the top row; bit 7 is the descender row of
// g, j, p, q and y.
constexpr uint8_t kFont[95][5] = {
    {0x00, 0x00, 0x00, 0x00, 0x00}, {0x00, 0x00, 0x5F, 0x00, 0x00}, {0x00, 0x07, 0x00, 0x07, 0x00},  //   ! "
    {0x14, 0x7F, 0x14, 0x7F, 0x14}, {0x24, 0x2A, 0x7F, 0x2A, 0x12}, {0x23, 0x13, 0x08, 0x64, 0x62},  // # $ %
    {0x36, 0x49, 0x55, 0x22, 0x50}, {0x00, 0x05, 0x03, 0x00, 0x00}, {0x00, 0x1C, 0x22, 0x41, 0x00},  // & ' (
    {0x00, 0x41, 0x22, 0x1C, 0x00}, {0x08, 0x2A, 0x1C, 0x2A, 0x08}, {0x08, 0x08, 0x3E, 0x08, 0x08},  // ) * +
    {0x00, 0x50, 0x30, 0x00, 0x00}, {0x08, 0x08, 0x08, 0x08, 0x08}, {0x00, 0x60, 0x60, 0x00, 0x00},  // , - .
    {0x20, 0x10, 0x08, 0x04, 0x02}, {0x3E, 0x51, 0x49, 0x45, 0x3E}, {0x00, 0x42, 0x7F, 0x40, 0x00},  // / 0 1
    {0x42, 0x61, 0x51, 0x49, 0x46}, {0x21, 0x41, 0x45, 0x4B, 0x31}, {0x18, 0x14, 0x12, 0x7F, 0x10},  // 2 3 4
    {0x27, 0x45, 0x45, 0x45, 0x39}, {0x3C, 0x4A, 0x49, 0x49, 0x30}, {0x01, 0x71, 0x09, 0x05, 0x03},  // 5 6 7
    {0x36, 0x49, 0x49, 0x49, 0x36}, {0x06, 0x49, 0x49, 0x29, 0x1E}, {0x00, 0x36, 0x36, 0x00, 0x00},  // 8 9 :
    {0x00, 0x56, 0x36, 0x00, 0x00}, {0x08, 0x14, 0x22, 0x41, 0x00}, {0x14, 0x14, 0x14, 0x14, 0x14},  // ; < =
    {0x00, 0x41, 0x22, 0x14, 0x08}, {0x02, 0x01, 0x51, 0x09, 0x06}, {0x32, 0x49, 0x79, 0x41, 0x3E},  // > ? @
    {0x7E, 0x11, 0x11, 0x11, 0x7E}, {0x7F, 0x49, 0x49, 0x49, 0x36}, {0x3E, 0x41, 0x41, 0x41, 0x22},  // A B C
    {0x7F, 0x41, 0x41, 0x22, 0x1C}, {0x7F, 0x49, 0x49, 0x49, 0x41}, {0x7F, 0x09, 0x09, 0x09, 0x01},  // D E F
    {0x3E, 0x41, 0x49, 0x49, 0x7A}, {0x7F, 0x08, 0x08, 0x08, 0x7F}, {0x00, 0x41, 0x7F, 0x41, 0x00},  // G H I
    {0x20, 0x40, 0x41, 0x3F, 0x01}, {0x7F, 0x08, 0x14, 0x22, 0x41}, {0x7F, 0x40, 0x40, 0x40, 0x40},  // J K L
    {0x7F, 0x02, 0x0C, 0x02, 0x7F}, {0x7F, 0x04, 0x08, 0x10, 0x7F}, {0x3E, 0x41, 0x41, 0x41, 0x3E},  // M N O
    {0x7F, 0x09, 0x09, 0x09, 0x06}, {0x3E, 0x41, 0x51, 0x21, 0x5E}, {0x7F, 0x09, 0x19, 0x29, 0x46},  // P Q R
    {0x46, 0x49, 0x49, 0x49, 0x31}, {0x01, 0x01, 0x7F, 0x01, 0x01}, {0x3F, 0x40, 0x40, 0x40, 0x3F},  // S T U
    {0x1F, 0x20, 0x40, 0x20, 0x1F}, {0x3F, 0x40, 0x38, 0x40, 0x3F}, {0x63, 0x14, 0x08, 0x14, 0x63},  // V W X
    {0x07, 0x08, 0x70, 0x08, 0x07}, {0x61, 0x51, 0x49, 0x45, 0x43}, {0x00, 0x7F, 0x41, 0x41, 0x00},  // Y Z [
    {0x02, 0x04, 0x08, 0x10, 0x20}, {0x00, 0x41, 0x41, 0x7F, 0x00}, {0x04, 0x02, 0x01, 0x02, 0x04},  // \ ] ^
    {0x40, 0x40, 0x40, 0x40, 0x40}, {0x00, 0x01, 0x02, 0x04, 0x00}, {0x20, 0x54, 0x54, 0x54, 0x78},  // _ ` a
    {0x7F, 0x48, 0x44, 0x44, 0x38}, {0x38, 0x44, 0x44, 0x44, 0x20}, {0x38, 0x44, 0x44, 0x48, 0x7F},  // b c d
    {0x38, 0x54, 0x54, 0x54, 0x18}, {0x08, 0x7E, 0x09, 0x01, 0x02}, {0x18, 0xA4, 0xA4, 0xA4, 0x7C},  // e f g
    {0x7F, 0x08, 0x04, 0x04, 0x78}, {0x00, 0x44, 0x7D, 0x40, 0x00}, {0x40, 0x80, 0x84, 0x7D, 0x00},  // h i j
    {0x7F, 0x10, 0x28, 0x44, 0x00}, {0x00, 0x41, 0x7F, 0x40, 0x00}, {0x7C, 0x04, 0x18, 0x04, 0x78},  // k l m
    {0x7C, 0x08, 0x04, 0x04, 0x78}, {0x38, 0x44, 0x44, 0x44, 0x38}, {0xFC, 0x24, 0x24, 0x24, 0x18},  // n o p
    {0x18, 0x24, 0x24, 0x18, 0xFC}, {0x7C, 0x08, 0x04, 0x04, 0x08}, {0x48, 0x54, 0x54, 0x54, 0x20},  // q r s
    {0x04, 0x3F, 0x44, 0x40, 0x20}, {0x3C, 0x40, 0x40, 0x20, 0x7C}, {0x1C, 0x20, 0x40, 0x20, 0x1C},  // t u v
    {0x3C, 0x40, 0x30, 0x40, 0x3C}, {0x44, 0x28, 0x10, 0x28, 0x44}, {0x1C, 0xA0, 0xA0, 0xA0, 0x7C},  // w x y
    {0x44, 0x64, 0x54, 0x4C, 0x44}, {0x00, 0x08, 0x36, 0x41, 0x00}, {0x00, 0x00, 0x7F, 0x00, 0x00},  // z { |
    {0x00, 0x41, 0x36, 0x08, 0x00}, {0x08, 0x04, 0x08, 0x10, 0x08},                                  // } ~
};
constexpr int kGlyphAdvance = 6;  // 5 columns and one of space
constexpr int kGlyphHeight = 7;

const Rgb kInk{40, 40, 40}, kFrame{90, 90, 90}, kGrid{228, 228, 228}, kMinorTick{150, 150, 150};

struct Rect {
  int x0, y0, x1, y1;  // inclusive
  bool contains(int x, int y) const { return x >= x0 && x <= x1 && y >= y0 && y <= y1; }
};

// A square brush of side width centred on (x, y), clipped to clip.
void stamp(RgbImage& img, const Rect& clip, int x, int y, int width, Rgb c) {
  const int lo = -(width - 1) / 2, hi = width / 2;
  for (int dy = lo; dy <= hi; ++dy)
    for (int dx = lo; dx <= hi; ++dx)
      if (clip.contains(x + dx, y + dy)) img.set(x + dx, y + dy, c);
}

// Bresenham's line from (x0, y0) to (x1, y1), every pixel stamped, so the line is continuous at any slope.
void draw_line(RgbImage& img, const Rect& clip, int x0, int y0, int x1, int y1, int width, Rgb c) {
  const int dx = std::abs(x1 - x0), sx = x0 < x1 ? 1 : -1;
  const int dy = -std::abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
  int err = dx + dy;
  for (;;) {
    stamp(img, clip, x0, y0, width, c);
    if (x0 == x1 && y0 == y1) break;
    const int e2 = 2 * err;
    if (e2 >= dy) err += dy, x0 += sx;
    if (e2 <= dx) err += dx, y0 += sy;
  }
}

void draw_dot(RgbImage& img, const Rect& clip, int x, int y, int radius, Rgb c) {
  for (int dy = -radius; dy <= radius; ++dy)
    for (int dx = -radius; dx <= radius; ++dx)
      if (dx * dx + dy * dy <= radius * radius + radius && clip.contains(x + dx, y + dy)) img.set(x + dx, y + dy, c);
}

// Maps a data value to a pixel coordinate along one axis: [lo, hi] (in log10 when log) -> [p_lo, p_hi].
struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  double p_lo = 0, p_hi = 1;

  double value(double v) const { return log ? std::log10(v) : v; }
  bool usable(double v) const { return std::isfinite(v) && (!log || v > 0); }
  int pixel(double v) const {
    const double t = (value(v) - lo) / (hi - lo);
    return int(std::lround(p_lo + t * (p_hi - p_lo)));
  }
};

struct Tick {
  double v;
  std::string label;  // empty: a minor tick, unlabelled
};

// 1, 2, 2.5 or 5 times a power of ten, the first at least raw.
double nice_step(double raw) {
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 2.5, 5.0})
    if (m * p >= raw * (1 - 1e-9)) return m * p;
  return 10 * p;
}

std::vector<Tick> linear_ticks(double lo, double hi, int target) {
  const double step = nice_step((hi - lo) / target);
  std::vector<Tick> ticks;
  for (double k = std::ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k += 1) {
    const double v = std::abs(k) < 0.5 ? 0.0 : k * step;  // no "-0"
    ticks.push_back({v, tick_label(v, step)});
  }
  return ticks;
}

// Ticks of a log axis over [lo, hi] in log10: decades labelled; over few decades also 2 and 5 times them; minor
// ticks at the other integer multiples while there is room.
std::vector<Tick> log_ticks(double lo, double hi) {
  const double decades = hi - lo;
  const int every = decades > 12 ? int(std::ceil(decades / 6)) : 1;
  std::vector<Tick> ticks;
  for (int e = int(std::floor(lo)); e <= int(std::ceil(hi)); ++e) {
    const double p = std::pow(10.0, e);
    for (int m = 1; m <= 9; ++m) {
      const double v = m * p, lv = std::log10(v);
      if (lv < lo - 1e-9 || lv > hi + 1e-9) continue;
      const bool labelled = (m == 1 && e % every == 0) || (decades < 2.2 && (m == 2 || m == 5));
      if (labelled)
        ticks.push_back({v, tick_label(v, v)});
      else if (decades <= 6 && every == 1)
        ticks.push_back({v, ""});
    }
  }
  // Less than one decade shown and no labelled tick inside it: label the ends' neighbours linearly instead.
  int labelled = 0;
  for (const auto& t : ticks) labelled += !t.label.empty();
  if (labelled < 2) {
    ticks.clear();
    for (const auto& t : linear_ticks(std::pow(10.0, lo), std::pow(10.0, hi), 4))
      if (t.v > 0) ticks.push_back(t);
  }
  return ticks;
}

}  // namespace

int text_width(const std::string& text, int scale) {
  return text.empty() ? 0 : (int(text.size()) * kGlyphAdvance - 1) * scale;
}

void draw_text(RgbImage& img, int x, int y, const std::string& text, Rgb colour, int scale, bool vertical) {
  for (size_t i = 0; i < text.size(); ++i) {
    int ch = static_cast<unsigned char>(text[i]);
    if (ch < 32 || ch > 126) ch = '?';
    const uint8_t* glyph = kFont[ch - 32];
    for (int col = 0; col < 5; ++col)
      for (int row = 0; row < 8; ++row) {
        if (!(glyph[col] >> row & 1)) continue;
        const int u = int(i) * kGlyphAdvance + col;  // along the text
        for (int sy = 0; sy < scale; ++sy)
          for (int sx = 0; sx < scale; ++sx) {
            if (vertical)
              img.set(x + row * scale + sx, y - u * scale - sy, colour);
            else
              img.set(x + u * scale + sx, y + row * scale + sy, colour);
          }
      }
  }
}

std::string tick_label(double v, double step) {
  if (v == 0 || std::abs(v) < std::abs(step) * 1e-9) return "0";
  step = std::abs(step);
  char buf[64];
  const double a = std::abs(v);
  if (a >= 1e4 && step >= 1) {  // 12k, 1.5M, 3G
    const double unit = a >= 1e9 ? 1e9 : a >= 1e6 ? 1e6 : 1e3;
    const char* suffix = a >= 1e9 ? "G" : a >= 1e6 ? "M" : "k";
    int decimals = 0;
    while (decimals < 3 && std::abs(std::round(step / unit * std::pow(10.0, decimals)) -
                                    step / unit * std::pow(10.0, decimals)) > 1e-6)
      ++decimals;
    std::snprintf(buf, sizeof buf, "%.*f%s", decimals, v / unit, suffix);
    return buf;
  }
  if (a < 1e-3 || step < 1e-4) {  // 3e-4, 2.5e-5: enough mantissa digits to tell ticks step apart
    const int digits = std::clamp(int(std::floor(std::log10(a)) - std::floor(std::log10(step))) + 1, 1, 4);
    std::snprintf(buf, sizeof buf, "%.*e", digits - 1, v);
    std::string s = buf, mantissa = s.substr(0, s.find('e')), exponent = s.substr(s.find('e') + 1);
    if (mantissa.find('.') != std::string::npos) {
      while (mantissa.back() == '0') mantissa.pop_back();
      if (mantissa.back() == '.') mantissa.pop_back();
    }
    const bool negative = exponent[0] == '-';
    exponent.erase(0, 1);
    while (exponent.size() > 1 && exponent[0] == '0') exponent.erase(0, 1);
    return mantissa + "e" + (negative ? "-" : "") + exponent;
  }
  int decimals = 0;  // the fewest that show the step exactly: 0.25 -> 2, 0.5 -> 1, 20 -> 0
  while (decimals < 6 && std::abs(std::round(step * std::pow(10.0, decimals)) - step * std::pow(10.0, decimals)) >
                             1e-6 * step * std::pow(10.0, decimals))
    ++decimals;
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

bool spans_more_than_a_decade(const std::vector<Series>& series) {
  double lo = std::numeric_limits<double>::infinity(), hi = 0;
  for (const auto& s : series)
    for (double v : s.y)
      if (std::isfinite(v) && v > 0) lo = std::min(lo, v), hi = std::max(hi, v);
  return hi > 0 && hi > 10 * lo;
}

void draw_chart(RgbImage& img, int left, int top, int width, int height, const Chart& chart) {
  // The legend's width sets where the plot area ends.
  size_t longest = 0;
  for (const auto& s : chart.series) longest = std::max(longest, s.name.size());
  const int sample_w = 26;
  const int legend_w = chart.series.empty() ? 16 : 16 + sample_w + 6 + text_width(std::string(longest, 'x')) + 12;
  const Rect area{left + 78, top + 36, left + width - 1 - legend_w, top + height - 1 - 42};

  Axis xa, ya;
  ya.log = chart.log_y;
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo, y_lo = x_lo, y_hi = -x_lo;
  for (const auto& s : chart.series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !ya.usable(s.y[i])) continue;
      x_lo = std::min(x_lo, s.x[i]), x_hi = std::max(x_hi, s.x[i]);
      y_lo = std::min(y_lo, ya.value(s.y[i])), y_hi = std::max(y_hi, ya.value(s.y[i]));
    }
  if (!(x_lo <= x_hi)) x_lo = 0, x_hi = 1, y_lo = 0, y_hi = 1;  // nothing to draw: an empty frame
  if (x_hi == x_lo) x_lo -= 0.5, x_hi += 0.5;
  if (y_hi == y_lo) {
    const double pad = ya.log ? 0.5 : std::max(std::abs(y_lo) * 0.1, 1e-12);
    y_lo -= pad, y_hi += pad;
  }
  const double x_pad = (x_hi - x_lo) * 0.02, y_pad = (y_hi - y_lo) * 0.06;
  xa.lo = x_lo - x_pad, xa.hi = x_hi + x_pad, xa.p_lo = area.x0, xa.p_hi = area.x1;
  ya.lo = y_lo - y_pad, ya.hi = y_hi + y_pad, ya.p_lo = area.y1, ya.p_hi = area.y0;  // up is smaller y

  const std::vector<Tick> x_ticks = linear_ticks(xa.lo, xa.hi, std::max(2, (area.x1 - area.x0) / 90));
  const std::vector<Tick> y_ticks =
      ya.log ? log_ticks(ya.lo, ya.hi) : linear_ticks(ya.lo, ya.hi, std::max(2, (area.y1 - area.y0) / 60));

  // Grid under the data.
  for (const auto& t : x_ticks) draw_line(img, area, xa.pixel(t.v), area.y0, xa.pixel(t.v), area.y1, 1, kGrid);
  for (const auto& t : y_ticks)
    if (!t.label.empty()) draw_line(img, area, area.x0, ya.pixel(t.v), area.x1, ya.pixel(t.v), 1, kGrid);

  for (const auto& s : chart.series) {
    bool have_prev = false;
    int px = 0, py = 0;
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !ya.usable(s.y[i])) {
        have_prev = false;
        continue;
      }
      const int x = xa.pixel(s.x[i]), y = ya.pixel(s.y[i]);
      if (s.line_width > 0) {
        if (have_prev)
          draw_line(img, area, px, py, x, y, s.line_width, s.colour);
        else
          stamp(img, area, x, y, s.line_width, s.colour);
      }
      if (s.markers) draw_dot(img, area, x, y, 3, s.colour);
      px = x, py = y, have_prev = true;
    }
  }

  // Frame, tick marks (outward) and tick labels.
  const Rect everything{0, 0, img.width - 1, img.height - 1};
  draw_line(img, everything, area.x0 - 1, area.y0 - 1, area.x1 + 1, area.y0 - 1, 1, kFrame);
  draw_line(img, everything, area.x0 - 1, area.y1 + 1, area.x1 + 1, area.y1 + 1, 1, kFrame);
  draw_line(img, everything, area.x0 - 1, area.y0 - 1, area.x0 - 1, area.y1 + 1, 1, kFrame);
  draw_line(img, everything, area.x1 + 1, area.y0 - 1, area.x1 + 1, area.y1 + 1, 1, kFrame);
  for (const auto& t : x_ticks) {
    const int x = xa.pixel(t.v);
    draw_line(img, everything, x, area.y1 + 2, x, area.y1 + 6, 1, kFrame);
    draw_text(img, x - text_width(t.label) / 2, area.y1 + 10, t.label, kInk);
  }
  for (const auto& t : y_ticks) {
    const int y = ya.pixel(t.v);
    if (y < area.y0 || y > area.y1) continue;
    if (t.label.empty()) {
      draw_line(img, everything, area.x0 - 4, y, area.x0 - 2, y, 1, kMinorTick);
      continue;
    }
    draw_line(img, everything, area.x0 - 6, y, area.x0 - 2, y, 1, kFrame);
    draw_text(img, area.x0 - 10 - text_width(t.label), y - kGlyphHeight / 2, t.label, kInk);
  }

  // Title, axis labels, legend.
  const int centre_x = (area.x0 + area.x1) / 2, centre_y = (area.y0 + area.y1) / 2;
  draw_text(img, centre_x - text_width(chart.title, 2) / 2, top + 12, chart.title, kInk, 2);
  draw_text(img, centre_x - text_width(chart.x_label) / 2, area.y1 + 26, chart.x_label, kInk);
  draw_text(img, left + 10, centre_y + text_width(chart.y_label) / 2, chart.y_label, kInk, 1, true);
  const int lx = area.x1 + 16;
  for (size_t i = 0; i < chart.series.size(); ++i) {
    const Series& s = chart.series[i];
    const int ly = area.y0 + 4 + int(i) * 16;
    const Rect legend_clip{lx, ly - 6, lx + sample_w, ly + 6};
    if (s.line_width > 0) draw_line(img, legend_clip, lx, ly, lx + sample_w, ly, s.line_width, s.colour);
    if (s.markers) draw_dot(img, legend_clip, lx + sample_w / 2, ly, 3, s.colour);
    draw_text(img, lx + sample_w + 6, ly - kGlyphHeight / 2, s.name, kInk);
  }
}

}  // namespace bfm::launch
