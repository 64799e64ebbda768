// Residual stream add: out = a + b (out may alias a).
#pragma once
#include <cstdint>

namespace bfm::kernels::cpu {
void residual_forward(float* out, const float* a, const float* b, int64_t n);
}  // namespace bfm::kernels::cpu

#ifdef BFM_WITH_CUDA
#include "kernels/cuda_types.h"
namespace bfm::kernels::cuda {
template <typename T>
void residual_forward(T* out, const T* a, const T* b, int64_t n, cudaStream_t stream);
}  // namespace bfm::kernels::cuda
#endif
