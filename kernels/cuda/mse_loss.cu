// Reconstruction losses on the GPU (kernels/cpu/mse_loss.cpp is its oracle), forward and backward fused in one pass
// over pred: the squared errors are summed into per-block partials while dpred += scale * (pred - target) is
// written, and a one-block kernel then adds the partials in block order (in double) into *loss. The grid size
// depends on the shapes alone, so the loss repeats bit for bit.
//
// masked_mse needs its normaliser (the number of masked tokens) before the gradient can be written, and the mask
// lives on the device, so it runs three kernels: (1) one block counts the masked tokens, (2) the fused pass reads
// that count and computes scale = 2 dloss / (n_masked L) itself, (3) the partials are reduced into *loss. With no
// masked token the loss is 0 and dpred is left as it is, as on the CPU.
// next_patch_mse knows its normaliser B (n_t - 1) P L on the host, so it runs (2) and (3) only.
#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/mse_loss.h"

namespace bfm::kernels::cuda {
namespace {

using detail::from_float;
using detail::to_float;

constexpr int kBlock = 256;
constexpr int kMaxBlocks = 1024;
constexpr int kCountBlock = 1024;

// The fused pass's grid: a function of the element count alone.
int loss_grid(int64_t n) { return static_cast<int>(std::clamp<int64_t>((n + kBlock - 1) / kBlock, 1, kMaxBlocks)); }

// *n_masked = the number of non-zero mask entries [rows], one block.
__global__ void count_masked_kernel(int64_t* __restrict__ n_masked, const uint8_t* __restrict__ mask, int64_t rows) {
  __shared__ int64_t warp_count[32];
  int64_t count = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) count += mask[r] != 0;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) count += __shfl_xor_sync(0xffffffffu, count, off);
  if ((threadIdx.x & 31) == 0) warp_count[threadIdx.x >> 5] = count;
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t total = 0;
    for (int w = 0; w < int(blockDim.x >> 5); ++w) total += warp_count[w];
    *n_masked = total;
  }
}

// partial [gridDim.x] = this block's sum of (pred - target)^2 over the masked rows of pred, target [rows, L];
// dpred (may be null) += scale * (pred - target) there, scale = 2 dloss / (n_masked L) as the CPU rounds it.
template <typename T>
__global__ void masked_mse_kernel(float* __restrict__ partial, T* __restrict__ dpred, const T* __restrict__ pred,
                                  const float* __restrict__ target, const uint8_t* __restrict__ mask,
                                  const int64_t* __restrict__ n_masked, int64_t rows, int L, float dloss) {
  __shared__ float shared[32];
  const int64_t count = *n_masked;
  const float scale = count > 0 ? static_cast<float>(2.0 * dloss / (static_cast<double>(count) * L)) : 0.0f;
  const int64_t total = rows * L;
  float acc = 0.0f;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    if (mask[e / L] == 0) continue;
    const float diff = to_float(pred[e]) - target[e];
    acc += diff * diff;
    if (dpred != nullptr) dpred[e] = from_float<T>(to_float(dpred[e]) + scale * diff);
  }
  acc = detail::block_sum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// Rows of sample b: token (j, p) at row (b n_t + j) P + p; its target is the row P further on; the last time patch
// predicts nothing. The pass walks only the pairs: element q of [B, (n_t - 1) P L].
template <typename T>
__global__ void next_patch_mse_kernel(float* __restrict__ partial, T* __restrict__ dpred, const T* __restrict__ pred,
                                      const float* __restrict__ target, int B, int n_t, int P, int L, float scale) {
  __shared__ float shared[32];
  const int64_t pairs_per_sample = int64_t(n_t - 1) * P * L, per_sample = int64_t(n_t) * P * L;
  const int64_t total = B * pairs_per_sample, shift = int64_t(P) * L;
  float acc = 0.0f;
  for (int64_t q = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; q < total; q += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = q / pairs_per_sample;
    const int64_t e = b * per_sample + (q - b * pairs_per_sample);
    const float diff = to_float(pred[e]) - target[e + shift];
    acc += diff * diff;
    if (dpred != nullptr) dpred[e] = from_float<T>(to_float(dpred[e]) + scale * diff);
  }
  acc = detail::block_sum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// *loss = (sum of partial [n_partial] in order) / denominator; the denominator is n_masked L when n_masked is
// non-null (0 masked: loss 0), else `denominator`.
__global__ void mse_finish_kernel(float* __restrict__ loss, const float* __restrict__ partial, int n_partial,
                                  const int64_t* __restrict__ n_masked, int L, double denominator) {
  __shared__ double shared[32];
  double acc = 0.0;
  for (int k = threadIdx.x; k < n_partial; k += blockDim.x) acc += partial[k];
  acc = detail::block_sum(acc, shared);
  if (threadIdx.x == 0) {
    if (n_masked != nullptr) denominator = static_cast<double>(*n_masked) * L;
    *loss = denominator > 0.0 ? static_cast<float>(acc / denominator) : 0.0f;
  }
}

}  // namespace

template <typename T>
void masked_mse(float* loss, T* dpred, const T* pred, const float* target, const uint8_t* mask, int B, int N, int L,
                float dloss, cudaStream_t stream) {
  require(B >= 0 && N >= 0 && L > 0, "cuda::masked_mse: bad sizes B=", B, " N=", N, " L=", L);
  const int64_t rows = int64_t(B) * N;
  const int grid = loss_grid(rows * L);
  detail::ScratchCarve carve;
  const size_t at_count = carve.add<int64_t>(1), at_partial = carve.add<float>(grid);
  void* base = detail::scratch(carve.bytes(), stream);
  int64_t* n_masked = detail::ScratchCarve::at<int64_t>(base, at_count);
  float* partial = detail::ScratchCarve::at<float>(base, at_partial);
  count_masked_kernel<<<1, kCountBlock, 0, stream>>>(n_masked, mask, rows);
  detail::check_launch("cuda::masked_mse (count)");
  masked_mse_kernel<T><<<grid, kBlock, 0, stream>>>(partial, dpred, pred, target, mask, n_masked, rows, L, dloss);
  detail::check_launch("cuda::masked_mse");
  mse_finish_kernel<<<1, kBlock, 0, stream>>>(loss, partial, grid, n_masked, L, 0.0);
  detail::check_launch("cuda::masked_mse (loss)");
}

template <typename T>
void next_patch_mse(float* loss, T* dpred, const T* pred, const float* target, int B, int n_t, int P, int L,
                    float dloss, cudaStream_t stream) {
  require(B >= 0 && n_t >= 0 && P > 0 && L > 0, "cuda::next_patch_mse: bad sizes B=", B, " n_t=", n_t, " P=", P,
          " L=", L);
  if (n_t < 2 || B == 0) {
    detail::check(cudaMemsetAsync(loss, 0, sizeof(float), stream), "cuda::next_patch_mse (no pairs)");
    return;
  }
  const double denominator = static_cast<double>(B) * (n_t - 1) * P * L;
  const float scale = static_cast<float>(2.0 * dloss / denominator);
  const int grid = loss_grid(int64_t(B) * (n_t - 1) * P * L);
  float* partial = static_cast<float*>(detail::scratch(sizeof(float) * grid, stream));
  next_patch_mse_kernel<T><<<grid, kBlock, 0, stream>>>(partial, dpred, pred, target, B, n_t, P, L, scale);
  detail::check_launch("cuda::next_patch_mse");
  mse_finish_kernel<<<1, kBlock, 0, stream>>>(loss, partial, grid, nullptr, L, denominator);
  detail::check_launch("cuda::next_patch_mse (loss)");
}

template void masked_mse<float>(float*, float*, const float*, const float*, const uint8_t*, int, int, int, float,
                                cudaStream_t);
template void masked_mse<bf16>(float*, bf16*, const bf16*, const float*, const uint8_t*, int, int, int, float,
                               cudaStream_t);
template void next_patch_mse<float>(float*, float*, const float*, const float*, int, int, int, int, float,
                                    cudaStream_t);
template void next_patch_mse<bf16>(float*, bf16*, const bf16*, const float*, int, int, int, int, float, cudaStream_t);

}  // namespace bfm::kernels::cuda
