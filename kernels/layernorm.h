// LayerNorm over the last dimension: biased variance, affine weight and bias (MODEL_SPEC: eps = 1e-5).
#pragma once
#include <cstdint>

namespace bfm::kernels::cpu {
// x [M, C] -> y [M, C]; saves mean [M] and rstd [M] = 1/sqrt(var + eps) for backward.
void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b,
                       int64_t M, int C, float eps);
// dx [M, C] += ..., dw [C] += ..., db [C] += ... (dw, db reduced over rows in a fixed order).
void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                        const float* mean, const float* rstd, int64_t M, int C);
}  // namespace bfm::kernels::cpu

#ifdef BFM_WITH_CUDA
#include "kernels/cuda_types.h"
namespace bfm::kernels::cuda {
// One warp (or block) per row; statistics in fp32. w, b fp32 (master copy).
template <typename T>
void layernorm_forward(T* y, float* mean, float* rstd, const T* x, const float* w, const float* b, int64_t M, int C,
                       float eps, cudaStream_t stream);
// No atomics: dw, db come from per-block partial sums reduced by a second pass in a fixed order, so a run repeats
// bit for bit.
template <typename T>
void layernorm_backward(T* dx, float* dw, float* db, const T* dy, const T* x, const float* w, const float* mean,
                        const float* rstd, int64_t M, int C, cudaStream_t stream);
}  // namespace bfm::kernels::cuda
#endif
