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
