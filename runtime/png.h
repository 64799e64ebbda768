// PNG files written by bfm itself (bfm plot): an 8-bit RGB image, each row filtered with the PNG filter that
// makes it smallest, deflated by zlib into one IDAT chunk. No plotting or imaging library is needed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bfm::runtime {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb&) const = default;
};

// pixels is (height, width, 3) row-major, top row first.
struct RgbImage {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;

  RgbImage(int w, int h, Rgb fill);
  // Out-of-bounds writes are dropped, so drawing code may run off the edge.
  void set(int x, int y, Rgb c) {
    if (x < 0 || y < 0 || x >= width || y >= height) return;
    uint8_t* p = &pixels[(size_t(y) * size_t(width) + size_t(x)) * 3];
    p[0] = c.r, p[1] = c.g, p[2] = c.b;
  }
  Rgb get(int x, int y) const {
    const uint8_t* p = &pixels[(size_t(y) * size_t(width) + size_t(x)) * 3];
    return {p[0], p[1], p[2]};
  }
};

// The bytes of a PNG file: signature, IHDR (8-bit truecolour, no interlace), IDAT, IEND.
std::vector<uint8_t> encode_png(const RgbImage& image);

// Writes encode_png(image) to path.tmp and renames it over path; bfm::Error naming the path on failure.
void write_png(const std::string& path, const RgbImage& image);

}  // namespace bfm::runtime
