// float32 <-> IEEE binary16 on the CPU, bit-exact with numpy's float16 (round to nearest, ties to even; overflow
// to infinity; subnormals kept; NaN stays NaN). Shards may store time series as float16 to halve their size; the
// conversion is done here rather than by HDF5, whose soft float conversion is slow and would also break the
// collective write path of a filtered dataset.
#pragma once

#include <cstdint>
#include <cstring>

namespace bfm::io {

inline uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t mag = x & 0x7fffffffu;
  if (mag >= 0x7f800000u)  // infinity or NaN (a NaN keeps its top payload bits and stays a NaN)
    return static_cast<uint16_t>(sign | 0x7c00u | (mag > 0x7f800000u ? 0x200u | ((mag >> 13) & 0x3ffu) : 0u));
  if (mag >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to infinity
  if (mag < 0x38800000u) {                                              // below 2^-14: a half subnormal or zero
    if (mag < 0x33000000u) return static_cast<uint16_t>(sign);         // below 2^-25: zero
    const uint32_t m = (mag & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - (mag >> 23);  // value / 2^-24 = m * 2^(e - 126)
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t h = (mag - 0x38000000u) >> 13;  // re-bias the exponent from 127 to 15
  const uint32_t rem = mag & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is right
  return static_cast<uint16_t>(sign | h);
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  uint32_t x;
  if (exp == 0x1fu) {
    x = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    x = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man == 0) {
    x = sign;
  } else {  // subnormal: man * 2^-24, exact in float32
    const float v = static_cast<float>(man) * 0x1.0p-24f;
    std::memcpy(&x, &v, 4);
    x |= sign;
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

}  // namespace bfm::io
