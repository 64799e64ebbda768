// Mean of token vectors per sample: pooled[b] = (1/n) sum_i x[b, i].
#pragma once
#include <cstdint>

namespace bfm::kernels::cpu {
// x [B, n, D] -> pooled [B, D] (overwritten).
void mean_pool_forward(float* pooled, const float* x, int B, int n, int D);
// dx [B, n, D] += dpooled[b] / n
void mean_pool_backward(float* dx, const float* dpooled, int B, int n, int D);
}  // namespace bfm::kernels::cpu

#ifdef BFM_WITH_CUDA
#include "kernels/cuda_types.h"
namespace bfm::kernels::cuda {
template <typename T>
void mean_pool_forward(T* pooled, const T* x, int B, int n, int D, cudaStream_t stream);
template <typename T>
void mean_pool_backward(T* dx, const T* dpooled, int B, int n, int D, cudaStream_t stream);
}  // namespace bfm::kernels::cuda
#endif
