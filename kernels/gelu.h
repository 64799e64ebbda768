// tanh-approximated GELU: 0.5 u (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3))) (PyTorch approximate="tanh").
#pragma once
#include <cstdint>

namespace bfm::kernels::cpu {
void gelu_forward(float* y, const float* x, int64_t n);
// dx[i] += dy[i] * gelu'(x[i])
void gelu_backward(float* dx, const float* dy, const float* x, int64_t n);
}  // namespace bfm::kernels::cpu

#ifdef BFM_WITH_CUDA
#include "kernels/cuda_types.h"
namespace bfm::kernels::cuda {
template <typename T>
void gelu_forward(T* y, const T* x, int64_t n, cudaStream_t stream);
// dx[i] += dy[i] * gelu'(x[i])
template <typename T>
void gelu_backward(T* dx, const T* dy, const T* x, int64_t n, cudaStream_t stream);
}  // namespace bfm::kernels::cuda
#endif
