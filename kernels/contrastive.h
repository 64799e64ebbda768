// Symmetric contrastive (CLIP) loss with a learnable temperature, normalisation fused in.
// zb = brain / |brain|, zs = stim / |stim| (row-wise L2), logits = exp(min(logit_scale, max_logit_scale)) zb zs^T,
// loss = (CE(logits, diag) + CE(logits^T, diag)) / 2, each CE a mean over the B rows.
// Above max_logit_scale the scale is clamped and its gradient is zero (as torch.clamp; at equality it flows).
// As torch.nn.functional.normalize, a row norm below 1e-12 is taken as 1e-12 (no NaN for a zero row).
#pragma once
#include <cstdint>

namespace bfm::kernels::cpu {
// brain [B, E], stim [B, E]. Returns the loss.
float contrastive_forward(const float* brain, const float* stim, float logit_scale, float max_logit_scale, int B,
                          int E);
// dbrain [B, E] += ..., dstim [B, E] += ..., *dlogit_scale += ... (all scaled by dloss; each may be null).
// Recomputes the logits.
void contrastive_backward(float* dbrain, float* dstim, float* dlogit_scale, const float* brain, const float* stim,
                          float logit_scale, float max_logit_scale, int B, int E, float dloss);
}  // namespace bfm::kernels::cpu

#ifdef BFM_WITH_CUDA
#include "kernels/cuda_types.h"
namespace bfm::kernels::cuda {
// Fused forward and backward of the symmetric loss: normalisation, the B x B logits, softmax over rows and over
// columns, the loss, and (when dbrain/dstim/dlogit_scale are non-null) the gradients scaled by dloss, in one call of a
// few kernels on the stream; the B x B gram is kept in scratch (4 B^2 bytes, 4 MiB at B = 1024). logit_scale, *loss
// and *dlogit_scale are device floats. Deterministic.
template <typename T>
void contrastive(float* loss, T* dbrain, T* dstim, float* dlogit_scale, const T* brain, const T* stim,
                 const float* logit_scale, float max_logit_scale, int B, int E, float dloss, cudaStream_t stream);
}  // namespace bfm::kernels::cuda
#endif
