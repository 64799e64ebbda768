// CUDA twins of the CPU kernels against their CPU oracle, on fresh random inputs. Every GPU test skips itself (and
// says so) where there is no GPU; CI still compiles them.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/gelu.h"
#include "reference.h"
#include "runtime/device.h"

namespace {

#define SKIP_WITHOUT_GPU()                                                   \
  if (bfm::runtime::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU on this machine"

// A device buffer filled from (or read back into) a host vector; poisoned with NaN first so that elements a kernel
// fails to write show up.
struct DeviceBuffer {
  float* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) {
    EXPECT_EQ(cudaMalloc(&ptr, n * sizeof(float)), cudaSuccess);
    const std::vector<float> poison(n, std::nanf(""));
    cudaMemcpy(ptr, poison.data(), n * sizeof(float), cudaMemcpyHostToDevice);
  }
  explicit DeviceBuffer(const std::vector<float>& host) : DeviceBuffer(host.size()) {
    cudaMemcpy(ptr, host.data(), n * sizeof(float), cudaMemcpyHostToDevice);
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  std::vector<float> host() const {
    std::vector<float> out(n);
    EXPECT_EQ(cudaMemcpy(out.data(), ptr, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }
};

// How many elements miss |got - want| <= rtol |want| + atol (NaN, i.e. unwritten, always misses).
size_t mismatches(const std::vector<float>& got, const std::vector<float>& want, double rtol, double atol) {
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i)
    bad += !(std::abs(double(got[i]) - want[i]) <= rtol * std::abs(double(want[i])) + atol);
  return bad;
}

TEST(CudaGeluTest, ForwardAndBackwardMatchCpu) {
  SKIP_WITHOUT_GPU();
  const size_t n = 100003;  // not a multiple of the block
  const std::vector<float> x = bfm::test::random_floats(n, 1, -6.0f, 6.0f);
  const std::vector<float> dy = bfm::test::random_floats(n, 2);
  const std::vector<float> dx0 = bfm::test::random_floats(n, 3);

  std::vector<float> y_cpu(n), dx_cpu = dx0;
  bfm::kernels::cpu::gelu_forward(y_cpu.data(), x.data(), int64_t(n));
  bfm::kernels::cpu::gelu_backward(dx_cpu.data(), dy.data(), x.data(), int64_t(n));

  DeviceBuffer d_x(x), d_y(n), d_dy(dy), d_dx(dx0);
  bfm::kernels::cuda::gelu_forward(d_y.ptr, d_x.ptr, int64_t(n));
  bfm::kernels::cuda::gelu_backward(d_dx.ptr, d_dy.ptr, d_x.ptr, int64_t(n));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(mismatches(d_y.host(), y_cpu, 1e-5, 1e-6), 0u);
  EXPECT_EQ(mismatches(d_dx.host(), dx_cpu, 1e-5, 1e-6), 0u);
}

}  // namespace
