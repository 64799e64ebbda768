// Mean of the token vectors of each sample on the GPU (kernels/cpu/mean_pool.cpp is its oracle):
// pooled [B, D] = (1/n) sum_i x [B, n, D];  backward dx [B, n, D] += dpooled[b] / n.
// Forward: block (32 columns, 8 token lanes) per (column tile, sample); each lane sums every 8th token, then the
// 8 lane sums are added in order through shared memory: a fixed order, so a run repeats bit for bit.
#include "kernels/cuda/common.cuh"
#include "kernels/mean_pool.h"

namespace bfm::kernels::cuda {
namespace {

using detail::from_float;
using detail::to_float;

constexpr int kColumnTile = 32;
constexpr int kTokenLanes = 8;

template <typename T>
__global__ void mean_pool_forward_kernel(T* __restrict__ pooled, const T* __restrict__ x, int n, int D) {
  __shared__ float lane_sum[kTokenLanes][kColumnTile + 1];
  const int b = blockIdx.y;
  const int d = blockIdx.x * kColumnTile + threadIdx.x;
  float acc = 0.0f;
  if (d < D)
    for (int i = threadIdx.y; i < n; i += kTokenLanes) acc += to_float(x[(int64_t(b) * n + i) * D + d]);
  lane_sum[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && d < D) {
    float total = 0.0f;
#pragma unroll
    for (int k = 0; k < kTokenLanes; ++k) total += lane_sum[k][threadIdx.x];
    pooled[int64_t(b) * D + d] = from_float<T>(total / static_cast<float>(n));
  }
}

template <typename T>
__global__ void mean_pool_backward_kernel(T* __restrict__ dx, const T* __restrict__ dpooled, int B, int n, int D,
                                          float inv_n) {
  const int64_t total = int64_t(B) * n * D;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = e / D;  // b * n + i
    const int d = static_cast<int>(e - row * D);
    const int64_t b = row / n;
    dx[e] = from_float<T>(to_float(dx[e]) + to_float(dpooled[b * D + d]) * inv_n);
  }
}

}  // namespace

template <typename T>
void mean_pool_forward(T* pooled, const T* x, int B, int n, int D, cudaStream_t stream) {
  require(B >= 0 && n > 0 && D > 0, "cuda::mean_pool_forward: bad sizes B=", B, " n=", n, " D=", D);
  require(B <= 65535, "cuda::mean_pool_forward: B=", B, " exceeds the grid's y limit 65535");
  if (B == 0) return;
  const dim3 grid((D + kColumnTile - 1) / kColumnTile, B);
  mean_pool_forward_kernel<T><<<grid, dim3(kColumnTile, kTokenLanes), 0, stream>>>(pooled, x, n, D);
  detail::check_launch("cuda::mean_pool_forward");
}

template <typename T>
void mean_pool_backward(T* dx, const T* dpooled, int B, int n, int D, cudaStream_t stream) {
  require(B >= 0 && n > 0 && D > 0, "cuda::mean_pool_backward: bad sizes B=", B, " n=", n, " D=", D);
  if (B == 0) return;
  const int64_t total = int64_t(B) * n * D;
  mean_pool_backward_kernel<T><<<detail::grid_for(total, 256), 256, 0, stream>>>(dx, dpooled, B, n, D,
                                                                                1.0f / static_cast<float>(n));
  detail::check_launch("cuda::mean_pool_backward");
}

template void mean_pool_forward<float>(float*, const float*, int, int, int, cudaStream_t);
template void mean_pool_forward<bf16>(bf16*, const bf16*, int, int, int, cudaStream_t);
template void mean_pool_backward<float>(float*, const float*, int, int, int, cudaStream_t);
template void mean_pool_backward<bf16>(bf16*, const bf16*, int, int, int, cudaStream_t);

}  // namespace bfm::kernels::cuda
