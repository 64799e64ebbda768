// HDF5's Fletcher32 loop as H5checksum.c writes it, word after word (16-bit big-endian words, sums folded every 360
// words, an odd last byte as the high byte of a word). The independent reference that tests/io/test_window_loader.cpp
// checks io::fletcher32 against, and what bench/bench_read.cpp times as the cost of HDF5's own filter.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bfm::test {

inline uint32_t fletcher32_by_the_book(const unsigned char* data, size_t bytes) {
  size_t len = bytes / 2;
  uint32_t sum1 = 0, sum2 = 0;
  while (len) {
    size_t tlen = len > 360 ? 360 : len;
    len -= tlen;
    do {
      sum1 += static_cast<uint32_t>((static_cast<uint16_t>(data[0]) << 8) | static_cast<uint16_t>(data[1]));
      data += 2;
      sum2 += sum1;
    } while (--tlen);
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
  }
  if (bytes % 2) {
    sum1 += static_cast<uint32_t>(static_cast<uint16_t>(*data) << 8);
    sum2 += sum1;
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
  }
  sum1 = (sum1 & 0xffff) + (sum1 >> 16);
  sum2 = (sum2 & 0xffff) + (sum2 >> 16);
  return (sum2 << 16) | sum1;
}

}  // namespace bfm::test
