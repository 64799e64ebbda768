// AdamW on the GPU (kernels/cpu/adamw.cpp is its oracle) and the global gradient norm that clipping needs, with no
// host round trip: grad_norm leaves the norm, the clip scale and a finite flag in device memory, and adamw_update
// reads the scale and the flag there.
//
// grad_norm: a grid fixed by n alone (at most kMaxNormBlocks blocks of kBlock threads, grid-stride) sums g^2 in fp32
// into one partial per block; one block adds the partials in order in double. The clip scale is the CPU AdamW's
// (runtime/optimizer.cpp): max_norm / norm when max_norm > 0 and norm > max_norm, else 1.
// adamw_update: one launch over every segment of the arena (blockIdx.y = segment, grid-stride over it in x), the
// CPU's formulas in the CPU's order; the bias corrections are computed on the host in double as the CPU does.
// The arena's fp32 pointers may be only 4-byte aligned, so every load is scalar.
#include <algorithm>
#include <cmath>

#include "kernels/adamw.h"
#include "kernels/cuda/common.cuh"

namespace bfm::kernels::cuda {
namespace {

using detail::from_float;

constexpr int kBlock = 256;
constexpr int64_t kMaxNormBlocks = 1024;
constexpr int64_t kMaxUpdateBlocks = 512;  // per segment

__global__ void sum_squares_partials_kernel(float* __restrict__ partial, const float* __restrict__ grad, int64_t n) {
  __shared__ float shared[32];
  float acc = 0.0f;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    acc += grad[i] * grad[i];
  acc = detail::block_sum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void grad_norm_finish_kernel(float* __restrict__ norm, float* __restrict__ scale, int* __restrict__ finite,
                                        const float* __restrict__ partial, int n_partial, float max_norm) {
  __shared__ double shared[32];
  double sum = 0.0;
  for (int k = threadIdx.x; k < n_partial; k += blockDim.x) sum += partial[k];
  sum = detail::block_sum(sum, shared);
  if (threadIdx.x == 0) {
    const double total = sqrt(sum);
    const double clip = (max_norm > 0.0f && total > max_norm) ? max_norm / total : 1.0;
    *norm = static_cast<float>(total);
    *scale = static_cast<float>(clip);
    *finite = isfinite(total) ? 1 : 0;
  }
}

template <typename M>
__global__ void adamw_update_kernel(float* __restrict__ param, M* __restrict__ mirror, float* __restrict__ m,
                                    float* __restrict__ v, const float* __restrict__ grad,
                                    const AdamWSegment* __restrict__ segments, float lr, float beta1, float beta2,
                                    float eps, float weight_decay, const float* __restrict__ grad_scale,
                                    const int* __restrict__ finite, float step_size, float bias_correction2_sqrt) {
  if (finite != nullptr && *finite == 0) return;  // a non-finite gradient norm: skip the step
  const AdamWSegment segment = segments[blockIdx.y];
  const float scale = grad_scale != nullptr ? *grad_scale : 1.0f;
  const float decay = 1.0f - lr * (segment.weight_decay ? weight_decay : 0.0f);
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < segment.size;
       k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = segment.offset + k;
    const float g = grad[i] * scale;
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    float p = param[i] * decay;
    // p -= lr * m_hat / (sqrt(v_hat) + eps), written as PyTorch does: (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
    p -= step_size * mi / (sqrtf(vi) / bias_correction2_sqrt + eps);
    m[i] = mi;
    v[i] = vi;
    param[i] = p;
    if (mirror != nullptr) mirror[i] = from_float<M>(p);
  }
}

template <typename M>
__global__ void copy_to_mirror_kernel(M* __restrict__ mirror, const float* __restrict__ param, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    mirror[i] = from_float<M>(param[i]);
}

}  // namespace

void grad_norm(float* norm, float* scale, int* finite, const float* grad, int64_t n, float max_norm,
               cudaStream_t stream) {
  require(n >= 0, "cuda::grad_norm: bad size n=", n);
  // The grid depends on n alone, so the order of the additions (and the norm's bits) is fixed for an arena.
  const int blocks = static_cast<int>(std::clamp<int64_t>((n + kBlock * 8 - 1) / (kBlock * 8), 1, kMaxNormBlocks));
  float* partial = static_cast<float*>(detail::scratch(sizeof(float) * blocks, stream));
  sum_squares_partials_kernel<<<blocks, kBlock, 0, stream>>>(partial, grad, n);
  detail::check_launch("cuda::grad_norm (partials)");
  grad_norm_finish_kernel<<<1, kBlock, 0, stream>>>(norm, scale, finite, partial, blocks, max_norm);
  detail::check_launch("cuda::grad_norm");
}

template <typename M>
void adamw_update(float* param, M* mirror, float* m, float* v, const float* grad, const AdamWSegment* segments,
                  int n_segments, int64_t max_segment, float lr, float beta1, float beta2, float eps,
                  float weight_decay, const float* grad_scale, const int* finite, int64_t step, cudaStream_t stream) {
  require(n_segments >= 0 && n_segments <= 65535 && max_segment >= 0, "cuda::adamw_update: bad sizes n_segments=",
          n_segments, " max_segment=", max_segment);
  require(step >= 1, "cuda::adamw_update: step=", step, " (steps count from 1)");
  if (n_segments == 0 || max_segment == 0) return;
  // The bias corrections are Python floats (float64) in PyTorch; so here, exactly as kernels/cpu/adamw.cpp.
  const double bias_correction1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  const float step_size = static_cast<float>(lr / bias_correction1);
  const float bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>((max_segment + kBlock - 1) / kBlock, kMaxUpdateBlocks)),
                  static_cast<unsigned>(n_segments));
  adamw_update_kernel<M><<<grid, kBlock, 0, stream>>>(param, mirror, m, v, grad, segments, lr, beta1, beta2, eps,
                                                      weight_decay, grad_scale, finite, step_size,
                                                      bias_correction2_sqrt);
  detail::check_launch("cuda::adamw_update");
}

template <typename M>
void copy_to_mirror(M* mirror, const float* param, int64_t n, cudaStream_t stream) {
  require(n >= 0, "cuda::copy_to_mirror: bad size n=", n);
  if (n == 0) return;
  copy_to_mirror_kernel<M><<<detail::grid_for(n, kBlock), kBlock, 0, stream>>>(mirror, param, n);
  detail::check_launch("cuda::copy_to_mirror");
}

template void adamw_update<float>(float*, float*, float*, float*, const float*, const AdamWSegment*, int, int64_t,
                                  float, float, float, float, float, const float*, const int*, int64_t, cudaStream_t);
template void adamw_update<bf16>(float*, bf16*, float*, float*, const float*, const AdamWSegment*, int, int64_t,
                                 float, float, float, float, float, const float*, const int*, int64_t, cudaStream_t);
template void copy_to_mirror<float>(float*, const float*, int64_t, cudaStream_t);
template void copy_to_mirror<bf16>(bf16*, const float*, int64_t, cudaStream_t);

}  // namespace bfm::kernels::cuda
