// tanh-GELU on the GPU, elementwise; the first CUDA twin of a CPU kernel (kernels/cpu/gelu.cpp is its oracle).
// One thread per element, grid-stride so any n works with a bounded grid.
#include "kernels/gelu.h"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace bfm::kernels::cuda {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCoeff = 0.044715f;

__global__ void gelu_forward_kernel(float* y, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float u = x[i];
    const float inner = kSqrt2OverPi * (u + kCoeff * u * u * u);
    y[i] = 0.5f * u * (1.0f + tanhf(inner));
  }
}

// d/du [0.5 u (1 + tanh(a))] = 0.5 (1 + tanh a) + 0.5 u (1 - tanh^2 a) a',  a' = sqrt(2/pi) (1 + 3 * 0.044715 u^2)
__global__ void gelu_backward_kernel(float* dx, const float* dy, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float u = x[i];
    const float t = tanhf(kSqrt2OverPi * (u + kCoeff * u * u * u));
    const float da = kSqrt2OverPi * (1.0f + 3.0f * kCoeff * u * u);
    dx[i] += dy[i] * (0.5f * (1.0f + t) + 0.5f * u * (1.0f - t * t) * da);
  }
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

int grid_for(int64_t n, int block) {
  const int64_t blocks = (n + block - 1) / block;
  return static_cast<int>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

}  // namespace

void gelu_forward(float* y, const float* x, int64_t n) {
  gelu_forward_kernel<<<grid_for(n, 256), 256>>>(y, x, n);
  check_launch("gelu_forward");
}

void gelu_backward(float* dx, const float* dy, const float* x, int64_t n) {
  gelu_backward_kernel<<<grid_for(n, 256), 256>>>(dx, dy, x, n);
  check_launch("gelu_backward");
}

}  // namespace bfm::kernels::cuda
