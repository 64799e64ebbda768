// Reconstruction losses of the mae and causal objectives (MODEL_SPEC "Objectives"), mean squared error
// accumulated in float64.
#pragma once
#include <cstdint>

namespace bfm::kernels::cpu {
// pred, target [B, N, L], mask [B, N] (non-zero = masked). Mean over masked tokens and their L values.
// Returns 0 when no token is masked.
float masked_mse_forward(const float* pred, const float* target, const uint8_t* mask, int B, int N, int L);
// dpred [B, N, L] += dloss * d(loss)/d(pred)
void masked_mse_backward(float* dpred, const float* pred, const float* target, const uint8_t* mask, int B, int N,
                         int L, float dloss);

// Next-patch prediction: pred [B, N, L] at token (j, p) predicts target token (j + 1, p); target [B, N, L];
// N = n_t * P. Mean over j = 0..n_t-2, all p, all L. Returns 0 when n_t < 2.
float next_patch_mse_forward(const float* pred, const float* target, int B, int n_t, int P, int L);
void next_patch_mse_backward(float* dpred, const float* pred, const float* target, int B, int n_t, int P, int L,
                             float dloss);
}  // namespace bfm::kernels::cpu

#ifdef BFM_WITH_CUDA
#include "kernels/cuda_types.h"
namespace bfm::kernels::cuda {
// Fused forward and backward, one pass over pred: *loss (a device float) = the loss; dpred += dloss * dloss/dpred
// when dpred is non-null. Partial sums per block, reduced by a second pass in a fixed order (deterministic).
// target fp32, mask a device array.
template <typename T>
void masked_mse(float* loss, T* dpred, const T* pred, const float* target, const uint8_t* mask, int B, int N, int L,
                float dloss, cudaStream_t stream);
template <typename T>
void next_patch_mse(float* loss, T* dpred, const T* pred, const float* target, int B, int n_t, int P, int L,
                    float dloss, cudaStream_t stream);
}  // namespace bfm::kernels::cuda
#endif
