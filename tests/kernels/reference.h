// Shared pieces of the kernel tests: seeded random inputs, float64 copies, relative errors and central finite
// differences. The references themselves (naive float64 loops) live in each op's test, written independently of
// the kernel they check.
#pragma once

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace bfm::test {

inline std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// max_i |got_i - want_i| / max_i |want_i|: the error relative to the size of the answer, so entries near zero do
// not blow it up and a wrong sign or a missing term cannot hide.
inline double rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  EXPECT_EQ(got.size(), want.size());
  double err = 0.0, scale = 1e-300;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    err = std::max(err, std::abs(static_cast<double>(got[i]) - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return err / scale;
}

// For a backward that adds into buffers pre-filled with `before`: the error of (got - before) against want.
inline double rel_error_added(const std::vector<float>& got, const std::vector<float>& before,
                              const std::vector<double>& want) {
  std::vector<double> total(want.size());
  for (size_t i = 0; i < want.size(); ++i) total[i] = before[i] + want[i];
  double err = 0.0, scale = 1e-300;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::abs(static_cast<double>(got[i]) - total[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return err / scale;
}

// What to pre-fill a gradient buffer with before a backward that adds (+=) into it: random values of the size of
// the expected gradient, so that checking got - before against it is not swamped by the rounding of a large
// pre-fill.
inline std::vector<float> prefill_for(const std::vector<double>& want, uint32_t seed) {
  double scale = 0.0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  std::vector<float> v = random_floats(want.size(), seed);
  for (float& x : v) x = static_cast<float>(x * scale);
  return v;
}

// Runs f() with `threads` OpenMP threads, then restores the previous count: for checking that a reduction gives the
// same bits whatever the thread count.
template <class F>
void with_threads(int threads, F f) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(threads);
  f();
  omp_set_num_threads(before);
}

// `count` distinct coordinates of a vector of size n (all of them when count >= n), ascending.
inline std::vector<size_t> sample_indices(size_t n, size_t count, uint32_t seed) {
  std::vector<size_t> idx(n);
  for (size_t i = 0; i < n; ++i) idx[i] = i;
  if (count < n) {
    std::mt19937 rng(seed);
    std::shuffle(idx.begin(), idx.end(), rng);
    idx.resize(count);
    std::sort(idx.begin(), idx.end());
  }
  return idx;
}

// Central differences (f(x + h e_k) - f(x - h e_k)) / 2h of a float64 scalar function at the coordinates idx.
template <class F>
std::vector<double> numeric_gradient(F f, std::vector<double> x, const std::vector<size_t>& idx, double h = 1e-5) {
  std::vector<double> g;
  g.reserve(idx.size());
  for (size_t k : idx) {
    const double x0 = x[k];
    x[k] = x0 + h;
    const double up = f(x);
    x[k] = x0 - h;
    const double down = f(x);
    x[k] = x0;
    g.push_back((up - down) / (2.0 * h));
  }
  return g;
}

// The entries idx of a gradient, for comparison with numeric_gradient.
inline std::vector<float> pick(const std::vector<float>& v, const std::vector<size_t>& idx) {
  std::vector<float> out;
  out.reserve(idx.size());
  for (size_t k : idx) out.push_back(v[k]);
  return out;
}

// sum(dy * y): the random scalar projection whose gradient a backward computes when handed dy.
inline double project(const std::vector<double>& dy, const std::vector<double>& y) {
  double s = 0.0;
  for (size_t i = 0; i < y.size(); ++i) s += dy[i] * y[i];
  return s;
}

}  // namespace bfm::test

namespace bfm::test {

// Per sample, `count` distinct token ids out of [0, N), ascending (as the MAE encoder keeps its visible tokens).
inline std::vector<int32_t> random_token_subsets(int B, int N, int count, uint32_t seed) {
  std::vector<int32_t> ids;
  ids.reserve(static_cast<size_t>(B) * count);
  for (int b = 0; b < B; ++b)
    for (size_t i : sample_indices(static_cast<size_t>(N), static_cast<size_t>(count), seed + static_cast<uint32_t>(b)))
      ids.push_back(static_cast<int32_t>(i));
  return ids;
}

}  // namespace bfm::test
