// Helpers every .cu file of kernels/cuda uses: launch checks, grid sizes, float <-> T conversions, vector loads,
// warp and block reductions in a fixed order (so results repeat bit for bit), and a per-stream scratch buffer.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/cuda_types.h"
#include "runtime/error.h"

namespace bfm::kernels::cuda::detail {

// Throws bfm::Error naming `what` if the last launch (or anything before it) failed.
inline void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) bfm::fail(std::string(what), ": CUDA launch failed: ", cudaGetErrorString(err));
}
inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) bfm::fail(std::string(what), ": ", cudaGetErrorString(err));
}

inline int grid_for(int64_t n, int block, int max_blocks = 65535 * 8) {
  const int64_t blocks = (n + block - 1) / block;
  return static_cast<int>(blocks < max_blocks ? (blocks > 0 ? blocks : 1) : max_blocks);
}

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}
// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result. `shared` holds 32
// floats. The order of additions is fixed by the block size alone.
__device__ __forceinline__ float block_sum(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : 0.0f;
  return warp_sum(v);
}

// A device buffer of at least `bytes`, kept per (stream, slot) and grown on demand; valid until the next call with
// the same stream and slot. Kernels use it for per-block partial sums that a second pass reduces in a fixed order.
void* scratch(size_t bytes, cudaStream_t stream, int slot = 0);

}  // namespace bfm::kernels::cuda::detail
