// What every GPU test shares: skip without a GPU (and say so), device buffers of float or bf16 that start poisoned
// with NaN (so unwritten elements show), host <-> device copies through float, and error measures.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/device.h"

#define SKIP_WITHOUT_GPU() \
  if (bfm::runtime::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU on this machine"

#define ASSERT_CUDA_OK(expr) ASSERT_EQ((expr), cudaSuccess) << cudaGetErrorString(cudaGetLastError())

namespace bfm::test {

// Sets an environment variable for the life of the object, then restores what was there (kernel variants are
// chosen through BFM_ATTENTION and BFM_ATTENTION_BWD).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_.c_str(), old_.c_str(), 1);
    else unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_, old_;
  bool had_ = false;
};

inline float to_host_float(float x) { return x; }
inline float to_host_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
inline T from_host_float(float x) {
  if constexpr (std::is_same_v<T, float>) return x;
  else return __float2bfloat16_rn(x);
}

// Rounds each value to T and back: the inputs a bf16 kernel really sees, for the CPU oracle to use too.
template <typename T>
std::vector<float> rounded_to(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = to_host_float(from_host_float<T>(v[i]));
  return out;
}

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) {
    EXPECT_EQ(cudaMalloc(&ptr, std::max<size_t>(n, 1) * sizeof(T)), cudaSuccess);
    poison();
  }
  explicit DeviceBuffer(const std::vector<float>& host) : DeviceBuffer(host.size()) { upload(host); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr); }
  void poison() {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, __nv_bfloat16>) {
      std::vector<T> p(n, from_host_float<T>(std::nanf("")));
      cudaMemcpy(ptr, p.data(), n * sizeof(T), cudaMemcpyHostToDevice);
    } else {
      cudaMemset(ptr, 0xff, n * sizeof(T));
    }
  }
  void upload(const std::vector<float>& host) {
    EXPECT_EQ(host.size(), n);
    std::vector<T> t(n);
    for (size_t i = 0; i < n; ++i) t[i] = from_host_float<T>(host[i]);
    EXPECT_EQ(cudaMemcpy(ptr, t.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<float> host() const {
    std::vector<T> t(n);
    EXPECT_EQ(cudaMemcpy(t.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    std::vector<float> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = to_host_float(t[i]);
    return out;
  }
};

// Raw (non-float) device arrays: indices and masks.
template <typename U>
struct DeviceArray {
  U* ptr = nullptr;
  size_t n = 0;
  explicit DeviceArray(const std::vector<U>& host) : n(host.size()) {
    EXPECT_EQ(cudaMalloc(&ptr, std::max<size_t>(n, 1) * sizeof(U)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(ptr, host.data(), n * sizeof(U), cudaMemcpyHostToDevice), cudaSuccess);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(ptr); }
};

// ||got - want|| / ||want|| over all elements (the norm-wise relative error of METHOD.md); NaN anywhere gives NaN,
// which fails every `<` comparison.
inline double norm_rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double num = 0, den = 1e-300;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * double(want[i]);
  }
  return std::sqrt(num / den);
}
inline size_t count_nonfinite(const std::vector<float>& v) {
  size_t bad = 0;
  for (float x : v) bad += !std::isfinite(x);
  return bad;
}

// Tolerances of the two modes (issue 5): float32 about 1e-5, bf16 about 1e-2 (per-element rounding of inputs and
// outputs to 8 mantissa bits).
template <typename T>
constexpr double mode_tolerance() {
  return std::is_same_v<T, float> ? 2e-5 : 1.5e-2;
}

}  // namespace bfm::test
