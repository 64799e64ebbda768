// PNG encoding (RFC 2083 / ISO 15948): chunks are length (big-endian), type, data, CRC-32 of type + data. IDAT holds
// one zlib stream of the filtered scanlines, each prefixed by its filter byte.
#include "runtime/png.h"

#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "base/error.h"

namespace bfm::runtime {

RgbImage::RgbImage(int w, int h, Rgb fill) : width(w), height(h) {
  require(w > 0 && h > 0, "image of ", w, "x", h, " pixels: both sides must be positive");
  pixels.resize(size_t(w) * size_t(h) * 3);
  for (size_t i = 0; i < pixels.size(); i += 3) pixels[i] = fill.r, pixels[i + 1] = fill.g, pixels[i + 2] = fill.b;
}

namespace {

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(uint8_t(v >> shift));
}

void put_chunk(std::vector<uint8_t>& out, const char type[4], const std::vector<uint8_t>& data) {
  put_u32(out, uint32_t(data.size()));
  const size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  const uLong crc = crc32(crc32(0L, Z_NULL, 0), out.data() + start, uInt(out.size() - start));
  put_u32(out, uint32_t(crc));
}

uint8_t paeth(int a, int b, int c) {  // a left, b up, c up-left
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  if (pa <= pb && pa <= pc) return uint8_t(a);
  return uint8_t(pb <= pc ? b : c);
}

// Filters one scanline with filter type 0..4 (none, sub, up, average, paeth) into out (without the type byte).
void filter_row(int type, const uint8_t* row, const uint8_t* prev, size_t n, uint8_t* out) {
  constexpr size_t bpp = 3;
  for (size_t i = 0; i < n; ++i) {
    const int a = i >= bpp ? row[i - bpp] : 0, b = prev ? prev[i] : 0, c = (prev && i >= bpp) ? prev[i - bpp] : 0;
    int predictor = 0;
    switch (type) {
      case 1: predictor = a; break;
      case 2: predictor = b; break;
      case 3: predictor = (a + b) / 2; break;
      case 4: predictor = paeth(a, b, c); break;
      default: break;
    }
    out[i] = uint8_t(row[i] - predictor);
  }
}

}  // namespace

std::vector<uint8_t> encode_png(const RgbImage& image) {
  const size_t stride = size_t(image.width) * 3;
  // The scanlines, each behind its filter byte. The filter is chosen per row by the usual heuristic: the one whose
  // output, read as signed bytes, has the smallest sum of magnitudes.
  std::vector<uint8_t> raw((stride + 1) * size_t(image.height));
  std::vector<uint8_t> trial(stride);
  for (int y = 0; y < image.height; ++y) {
    const uint8_t* row = &image.pixels[size_t(y) * stride];
    const uint8_t* prev = y > 0 ? row - stride : nullptr;
    uint8_t* dst = &raw[size_t(y) * (stride + 1)];
    uint64_t best = UINT64_MAX;
    for (int type = 0; type <= 4; ++type) {
      filter_row(type, row, prev, stride, trial.data());
      uint64_t cost = 0;
      for (uint8_t v : trial) cost += uint64_t(std::abs(int(int8_t(v))));
      if (cost < best) best = cost, dst[0] = uint8_t(type), std::memcpy(dst + 1, trial.data(), stride);
    }
  }
  uLongf packed_size = compressBound(uLong(raw.size()));
  std::vector<uint8_t> packed(packed_size);
  const int rc = compress2(packed.data(), &packed_size, raw.data(), uLong(raw.size()), Z_BEST_COMPRESSION);
  require(rc == Z_OK, "png: zlib compress2 failed (", rc, ") on a ", image.width, "x", image.height, " image");
  packed.resize(packed_size);

  std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::vector<uint8_t> ihdr;
  put_u32(ihdr, uint32_t(image.width));
  put_u32(ihdr, uint32_t(image.height));
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // bit depth 8, RGB, deflate, adaptive filters, no interlace
  put_chunk(out, "IHDR", ihdr);
  put_chunk(out, "IDAT", packed);
  put_chunk(out, "IEND", {});
  return out;
}

void write_png(const std::string& path, const RgbImage& image) {
  const std::vector<uint8_t> bytes = encode_png(image);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    require(bool(f), tmp, ": cannot open for writing: ", std::strerror(errno));
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    f.close();
    if (!f) {
      std::remove(tmp.c_str());
      fail(tmp, ": write failed: ", std::strerror(errno));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    fail(path, ": cannot rename ", tmp, " to it: ", why);
  }
}

}  // namespace bfm::runtime
