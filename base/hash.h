// The integer mixers bfm derives its deterministic choices from (splits, shuffles, checksums, hold-backs). Written
// once here: a split that depends on a subject id, a sampler permutation and a checkpoint checksum must all mean the
// same function, on every compiler. Header-only and dependency-free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace bfm {

// splitmix64's finaliser (Steele, Lea and Flood 2014; the output stage of Vigna's splitmix64): a bijection of 64-bit
// words whose every output bit depends on every input bit.
constexpr uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// One step of splitmix64: advances the state z and returns the next output.
constexpr uint64_t splitmix64(uint64_t& z) { return mix64(z += 0x9E3779B97F4A7C15ULL); }

// FNV-1a over bytes (64-bit). Its high bits barely differ between strings that differ in their last characters:
// pass it through mix64 before using them.
// `h` continues an earlier digest (the offset basis starts one).
constexpr uint64_t kFnv1aBasis = 0xcbf29ce484222325ULL;
constexpr uint64_t fnv1a64(std::string_view bytes, uint64_t h = kFnv1aBasis) {
  for (unsigned char c : bytes) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}
inline uint64_t fnv1a64(const void* data, size_t n, uint64_t h = kFnv1aBasis) {
  return fnv1a64(std::string_view(static_cast<const char*>(data), n), h);
}

// The top 53 bits of a word as a double in [0, 1).
constexpr double unit_interval(uint64_t word) { return static_cast<double>(word >> 11) * 0x1.0p-53; }

}  // namespace bfm
