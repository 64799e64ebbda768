// tanh-approximated GELU: 0.5 u (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3))) (PyTorch approximate="tanh").
#pragma once
#include <cstdint>

namespace bfm::kernels::cpu {
void gelu_forward(float* y, const float* x, int64_t n);
// dx[i] += dy[i] * gelu'(x[i])
void gelu_backward(float* dx, const float* dy, const float* x, int64_t n);
}  // namespace bfm::kernels::cpu

namespace bfm::kernels::cuda {
// Device pointers; runs on the current stream (0). Same maths as the CPU twin.
void gelu_forward(float* y, const float* x, int64_t n);
void gelu_backward(float* dx, const float* dy, const float* x, int64_t n);
}  // namespace bfm::kernels::cuda
