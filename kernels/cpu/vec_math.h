// Small vector maths shared by the CPU kernels: four-lane float vectors (GCC/Clang vector extension) and a
// branch-free exp, so that the softmax and the GELU vectorise (glibc's expf and tanhf are calls per element, and GCC
// will neither vectorise them nor if-convert float compares under the default -ftrapping-math).
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace bfm::kernels::cpu {

// Four floats (ints) in one SSE register (GCC/Clang vector extension; scalars broadcast in arithmetic and
// comparisons, and `mask ? a : b` selects lane by lane).
typedef float Float4 __attribute__((vector_size(16)));
typedef int32_t Int4 __attribute__((vector_size(16)));

// exp(x) for x <= 0 (scores minus their row maximum or lse), four lanes at once in branch-free arithmetic: std::exp
// is a library call per element and dominated the forward for small dh (GCC will not vectorise it, nor if-convert
// float compares under the default -ftrapping-math, hence the explicit vector type).
// Cephes' expf: x = n ln2 + r with n = round(x / ln2) (by the 1.5 * 2^23 trick, which also leaves n in the low
// mantissa bits), ln2 split in two so r is exact, e^r by a degree-7 polynomial, 2^n through the exponent bits.
// Relative error about 2e-7 (float rounding) on [-87.3, 88]; below -87.3 the result is 0.
inline Float4 exp4(Float4 x) {
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  Float4 xc = x < -87.3f ? -87.3f : x;
  xc = xc > 88.0f ? 88.0f : xc;
  const Float4 shifted = xc * 1.44269504088896341f + kRound;
  const Float4 n = shifted - kRound;
  const Int4 n_int = std::bit_cast<Int4>(shifted) - std::bit_cast<int32_t>(kRound);
  const Float4 r = xc - n * 0.693359375f + n * 2.12194440e-4f;
  Float4 y = 1.9875691500e-4f * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const Float4 two_n = std::bit_cast<Float4>((n_int + 127) << 23);
  return x < -87.3f ? 0.0f : y * two_n;
}

inline Float4 load4(const float* p) {
  Float4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void add4(float* p, Float4 v) {
  Float4 old;
  std::memcpy(&old, p, sizeof old);
  old += v;
  std::memcpy(p, &old, sizeof old);
}

inline void store4(float* p, Float4 v) { std::memcpy(p, &v, sizeof v); }

}  // namespace bfm::kernels::cpu
