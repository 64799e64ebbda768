// The one random number generator of bfm: xoshiro256** seeded through splitmix64, with our own uniform and
// normal draws, so that a seed gives the same numbers on every compiler and standard library (std::normal_distribution
// does not). Its whole state is four words, saved in training checkpoints for exact resumption.
// Header-only and dependency-free, so io/ (synthetic data) and model/ (initialisation, masks) share it.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "base/hash.h"

namespace bfm {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }

  void reseed(uint64_t seed) {
    uint64_t z = seed;
    for (auto& word : state_) word = splitmix64(z);
    has_spare_ = false;
  }

  // An independent stream for (seed, a, b): e.g. (run seed, rank, epoch) or (seed, subject, run).
  static Rng stream(uint64_t seed, uint64_t a, uint64_t b = 0) {
    uint64_t z = seed ^ (0x9E3779B97F4A7C15ULL * (a + 1)) ^ (0xC2B2AE3D27D4EB4FULL * (b + 1));
    return Rng(splitmix64(z));
  }

  uint64_t next_u64() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

  // Uniform integer in [0, n) without modulo bias (Lemire's method).
  uint64_t below(uint64_t n) {
    __uint128_t m = static_cast<__uint128_t>(next_u64()) * n;
    auto low = static_cast<uint64_t>(m);
    if (low < n) {
      const uint64_t threshold = (0 - n) % n;
      while (low < threshold) {
        m = static_cast<__uint128_t>(next_u64()) * n;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }

  // Standard normal (Marsaglia polar method; the second value is kept for the next call).
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u, v, s;
    do {
      u = 2.0 * uniform() - 1.0;
      v = 2.0 * uniform() - 1.0;
      s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    const double f = std::sqrt(-2.0 * std::log(s) / s);
    spare_ = v * f;
    has_spare_ = true;
    return u * f;
  }

  // The complete state, for checkpoints: four xoshiro words, then the spare normal (bits) and its flag.
  std::array<uint64_t, 6> state() const {
    uint64_t spare_bits;
    static_assert(sizeof(spare_bits) == sizeof(spare_));
    __builtin_memcpy(&spare_bits, &spare_, sizeof(spare_));
    return {state_[0], state_[1], state_[2], state_[3], spare_bits, has_spare_ ? 1u : 0u};
  }
  void set_state(const std::array<uint64_t, 6>& s) {
    for (int i = 0; i < 4; ++i) state_[i] = s[i];
    __builtin_memcpy(&spare_, &s[4], sizeof(spare_));
    has_spare_ = s[5] != 0;
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

  std::array<uint64_t, 4> state_{};
  double spare_ = 0.0;
  bool has_spare_ = false;
};

}  // namespace bfm
