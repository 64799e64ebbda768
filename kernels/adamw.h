// AdamW (decoupled weight decay, bias-corrected moments) and the global gradient norm used for clipping.
#pragma once
#include <cstdint>

namespace bfm::kernels::cpu {
// sum of g[i]^2 in float64 (global-norm clipping sums this over every gradient tensor, then takes sqrt).
double sum_of_squares(const float* g, int64_t n);
// One step, in PyTorch's order: g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p *= 1 - lr * weight_decay; p -= lr * (m / (1 - b1^step)) / (sqrt(v / (1 - b2^step)) + eps). step counts from 1.
void adamw_update(float* param, float* m, float* v, const float* grad, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, float grad_scale, int64_t step);
}  // namespace bfm::kernels::cpu

#ifdef BFM_WITH_CUDA
#include "kernels/cuda_types.h"
namespace bfm::kernels::cuda {
struct AdamWSegment {
  int64_t offset, size;
  int weight_decay;  // 1: decay this range
};
// Global-norm clipping without a host round trip: *norm = sqrt(sum g^2) over [0, n) (fp32 partials per block,
// reduced in a fixed order, the final sum in double), *scale = max_norm / norm when max_norm > 0 and norm > max_norm,
// else 1 (the CPU AdamW::step's clipping, runtime/optimizer.cpp), and *finite = 1 if the norm is finite, else 0 (and
// then the update below is skipped on the device).
void grad_norm(float* norm, float* scale, int* finite, const float* grad, int64_t n, float max_norm,
               cudaStream_t stream);
// One fused AdamW step over every segment (a device array of n_segments) of the arena: fp32 master param, m, v;
// the grad scaled by *grad_scale (null: 1); writes the updated parameter's bf16 mirror when mirror is non-null. Skips
// everything when *finite == 0 (finite may be null). Same maths and order as the CPU adamw_update.
template <typename M>
void adamw_update(float* param, M* mirror, float* m, float* v, const float* grad, const AdamWSegment* segments,
                  int n_segments, int64_t max_segment, float lr, float beta1, float beta2, float eps,
                  float weight_decay, const float* grad_scale, const int* finite, int64_t step, cudaStream_t stream);
// mirror[i] = T(param[i]) for [0, n).
template <typename M>
void copy_to_mirror(M* mirror, const float* param, int64_t n, cudaStream_t stream);
}  // namespace bfm::kernels::cuda
#endif
