// Small vector maths shared by the CPU kernels: float vectors of 4, 8 and 16 lanes (GCC/Clang vector extension) and
// a branch-free exp, so that the softmax and the GELU vectorise (glibc's expf and tanhf are calls per element, and GCC
// will neither vectorise them nor if-convert float compares under the default -ftrapping-math).
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace bfm::kernels::cpu {

// Floats in one SSE (Float4), AVX (Float8) or AVX-512 (Float16) register. Scalars broadcast in arithmetic and
// comparisons, and `mask ? a : b` selects lane by lane. A type wider than the target's registers still compiles
// (GCC splits it into narrower operations), but register-blocked code should use FloatV.
typedef float Float4 __attribute__((vector_size(16)));
typedef float Float8 __attribute__((vector_size(32)));
typedef float Float16 __attribute__((vector_size(64)));
typedef int32_t Int4 __attribute__((vector_size(16)));
// Eight doubles: one AVX-512 register, two AVX or four SSE ones (bfm eval's float64 linear algebra).
typedef double Double8 __attribute__((vector_size(64)));

// The widest vector the compile target has registers for (-march decides), and how many of them register-blocked
// code may keep as accumulators: AVX-512 has 32 vector registers, SSE and AVX 16; the rest hold loaded operands.
#if defined(__AVX512F__)
typedef Float16 FloatV;
constexpr int kVecRegisters = 32;
#elif defined(__AVX__)
typedef Float8 FloatV;
constexpr int kVecRegisters = 16;
#else
typedef Float4 FloatV;
constexpr int kVecRegisters = 16;
#endif
constexpr int kLanes = sizeof(FloatV) / sizeof(float);

// exp(x) for x <= 0 (scores minus their row maximum or lse), lane by lane in branch-free arithmetic, for any of the
// float vector types above: std::exp is a library call per element and dominated the forward for small dh.
// Cephes' expf: x = n ln2 + r with n = round(x / ln2) (by the 1.5 * 2^23 trick, which also leaves n in the low
// mantissa bits), ln2 split in two so r is exact, e^r by a degree-7 polynomial, 2^n through the exponent bits.
// Relative error about 2e-7 (float rounding) on [-87.3, 88]; below -87.3 (-inf included) the result is 0.
template <typename V>
inline V exp_lanes(V x) {
  using IntV = decltype(x < x);  // the int vector of the same width, as comparisons return
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  V xc = x < -87.3f ? -87.3f : x;
  xc = xc > 88.0f ? 88.0f : xc;
  const V shifted = xc * 1.44269504088896341f + kRound;
  const V n = shifted - kRound;
  const IntV n_int = std::bit_cast<IntV>(shifted) - std::bit_cast<int32_t>(kRound);
  const V r = xc - n * 0.693359375f + n * 2.12194440e-4f;
  V y = 1.9875691500e-4f * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const V two_n = std::bit_cast<V>((n_int + 127) << 23);
  return x < -87.3f ? 0.0f : y * two_n;
}

// Unaligned loads and stores (memcpy compiles to one vector move).
template <typename V>
inline V load_lanes(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename V>
inline void store_lanes(float* p, V v) {
  std::memcpy(p, &v, sizeof v);
}

template <typename V>
inline void add_lanes(float* p, V v) {
  store_lanes(p, load_lanes<V>(p) + v);
}

template <typename V>
inline V max_lanewise(V a, V b) {
  return a > b ? a : b;
}

// Horizontal sum and maximum, halving the width at each step (log2(lanes) vector operations, not a serial chain).
// Only for the widths the target has registers for (passing wider vectors by value would change the ABI).
inline float sum_lanes(Float4 v) { return (v[0] + v[2]) + (v[1] + v[3]); }
inline float max_lanes(Float4 v) {
  const float a = v[0] > v[2] ? v[0] : v[2], b = v[1] > v[3] ? v[1] : v[3];
  return a > b ? a : b;
}
#if defined(__AVX__)
inline Float4 low_half(Float8 v) { return load_lanes<Float4>(reinterpret_cast<const float*>(&v)); }
inline Float4 high_half(Float8 v) { return load_lanes<Float4>(reinterpret_cast<const float*>(&v) + 4); }
inline float sum_lanes(Float8 v) { return sum_lanes(low_half(v) + high_half(v)); }
inline float max_lanes(Float8 v) { return max_lanes(max_lanewise(low_half(v), high_half(v))); }
#endif
#if defined(__AVX512F__)
inline Float8 low_half(Float16 v) { return load_lanes<Float8>(reinterpret_cast<const float*>(&v)); }
inline Float8 high_half(Float16 v) { return load_lanes<Float8>(reinterpret_cast<const float*>(&v) + 8); }
inline float sum_lanes(Float16 v) { return sum_lanes(low_half(v) + high_half(v)); }
inline float max_lanes(Float16 v) { return max_lanes(max_lanewise(low_half(v), high_half(v))); }
#endif

// The four-lane spellings the GELU uses.
inline Float4 exp4(Float4 x) { return exp_lanes(x); }
inline Float4 load4(const float* p) { return load_lanes<Float4>(p); }
inline void store4(float* p, Float4 v) { store_lanes(p, v); }

}  // namespace bfm::kernels::cpu
