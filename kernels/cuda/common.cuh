// Helpers every .cu file of kernels/cuda uses: launch checks, grid sizes, float <-> T conversions, vector loads,
// warp and block reductions in a fixed order (so results repeat bit for bit), and a per-stream scratch buffer.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/cuda_types.h"
#include "base/error.h"

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

// ---- Added with the elementwise, normalisation, loss and optimizer kernels ----

namespace bfm::kernels::cuda::detail {

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}
// block_sum in double; `shared` holds 32 doubles.
__device__ __forceinline__ double block_sum(double v, double* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : 0.0;
  return warp_sum(v);
}
// Maximum over the block, as block_sum (blockDim.x a multiple of 32; `shared` holds 32 floats).
__device__ __forceinline__ float block_max(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : __int_as_float(0xff800000u);  // -inf
  return warp_max(v);
}

// 16 bytes of T (8 bf16 or 4 float) for one vector load or store; only where every pointer is 16-byte aligned.
template <typename T>
struct alignas(16) Pack16 {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
};
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Several buffers cut from one scratch allocation, each 256-byte aligned: size them with add() (which returns the
// offset), then call scratch(bytes()) once and find each buffer with at().
class ScratchCarve {
 public:
  template <typename U>
  size_t add(size_t count) {
    const size_t offset = bytes_;
    bytes_ += (count * sizeof(U) + 255) / 256 * 256;
    return offset;
  }
  size_t bytes() const { return bytes_ > 0 ? bytes_ : 256; }
  template <typename U>
  static U* at(void* base, size_t offset) {
    return reinterpret_cast<U*>(static_cast<char*>(base) + offset);
  }

 private:
  size_t bytes_ = 0;
};

// slot [B, N] = k where index[b, k] = i (the slot of position i of sample b), -1 where no k names i. The caller
// guarantees distinct positions per sample, so the scatter has no races; entries outside [0, N) are ignored.
template <typename Index>
__global__ void inverse_index_kernel(int32_t* slot, const Index* index, int B, int N, int n_idx) {
  const int64_t total = static_cast<int64_t>(B) * n_idx;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = e / n_idx;
    const Index i = index[e];
    if (i >= 0 && i < N) slot[b * N + i] = static_cast<int32_t>(e - b * n_idx);
  }
}
// Fills the [B, N] int32 buffer `slot` (device memory the caller owns) on `stream`.
inline void inverse_index(int32_t* slot, const int32_t* index, int B, int N, int n_idx, cudaStream_t stream,
                          const char* what) {
  const size_t count = static_cast<size_t>(B) * N;
  check(cudaMemsetAsync(slot, 0xff, count * sizeof(int32_t), stream), what);  // all -1
  if (static_cast<int64_t>(B) * n_idx == 0) return;
  inverse_index_kernel<<<grid_for(static_cast<int64_t>(B) * n_idx, 256), 256, 0, stream>>>(slot, index, B, N, n_idx);
  check_launch(what);
}

// The embedding gradients that patch_embed_backward and mask_fill_backward share, deterministic without atomics:
//   dparcel [P, D] += sum over (b, j) of g(b, j * P + p),  dtime [n_t, D] += sum over (b, p) of g(b, j * P + p),
//   dmask [D] += sum over the positions (b, i) where visible_slot[b, i] < 0 of g(b, i).
// The gradient at position i of sample b is src [B, rows_per_sample, D] at row r = row_of[b, i] (r < 0: none, the
// position contributes nothing) or r = i where row_of is null. Each output is summed in one fixed order: dparcel by
// one thread per (p, d) over (b, j); dtime and dmask through partials [B, n_t, D] (sums over p, one thread each)
// that a second kernel adds up over b (and j) in order.
template <typename T>
__device__ __forceinline__ float position_grad(const T* src, const int32_t* row_of, int b, int i, int N,
                                               int rows_per_sample, int D, int d) {
  const int r = row_of != nullptr ? row_of[int64_t(b) * N + i] : i;
  return r >= 0 ? to_float(src[(int64_t(b) * rows_per_sample + r) * D + d]) : 0.0f;
}

template <typename T>
__global__ void parcel_grad_kernel(float* dparcel, const T* src, const int32_t* row_of, int B, int N,
                                   int rows_per_sample, int P, int D) {
  const int n_t = N / P;
  const int64_t total = int64_t(P) * D;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int p = static_cast<int>(e / D), d = static_cast<int>(e % D);
    float acc = 0.0f;
    for (int b = 0; b < B; ++b)
      for (int j = 0; j < n_t; ++j) acc += position_grad(src, row_of, b, j * P + p, N, rows_per_sample, D, d);
    dparcel[e] += acc;
  }
}

// time_partial [B, n_t, D] = sum over p of g(b, j * P + p); masked_partial (may be null) the same over the positions
// with visible_slot < 0.
template <typename T>
__global__ void time_grad_partials_kernel(float* time_partial, float* masked_partial, const T* src,
                                          const int32_t* row_of, const int32_t* visible_slot, int B, int N,
                                          int rows_per_sample, int P, int D) {
  const int n_t = N / P;
  const int64_t total = int64_t(B) * n_t * D;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t bj = e / D;
    const int d = static_cast<int>(e - bj * D);
    const int b = static_cast<int>(bj / n_t), j = static_cast<int>(bj % n_t);
    float acc = 0.0f, masked = 0.0f;
    for (int p = 0; p < P; ++p) {
      const int i = j * P + p;
      const float g = position_grad(src, row_of, b, i, N, rows_per_sample, D, d);
      acc += g;
      if (masked_partial != nullptr && visible_slot[int64_t(b) * N + i] < 0) masked += g;
    }
    if (time_partial != nullptr) time_partial[e] = acc;
    if (masked_partial != nullptr) masked_partial[e] = masked;
  }
}

// dtime [n_t, D] += sum over b of time_partial [B, n_t, D] (one thread per (j, d));
// dmask [D] += sum over (b, j) of masked_partial (one thread per d). (A template only so that it may live in a
// header that several .cu files include.)
template <typename Partial>
__global__ void time_grad_reduce_kernel(float* dtime, float* dmask, const Partial* time_partial,
                                        const Partial* masked_partial, int B, int n_t, int D) {
  const int64_t n_time = dtime != nullptr ? int64_t(n_t) * D : 0;
  const int64_t n_mask = dmask != nullptr ? D : 0;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n_time + n_mask;
       e += int64_t(gridDim.x) * blockDim.x) {
    if (e < n_time) {
      float acc = 0.0f;
      for (int b = 0; b < B; ++b) acc += time_partial[int64_t(b) * n_t * D + e];
      dtime[e] += acc;
    } else {
      const int d = static_cast<int>(e - n_time);
      float acc = 0.0f;
      for (int64_t bj = 0; bj < int64_t(B) * n_t; ++bj) acc += masked_partial[bj * D + d];
      dmask[d] += acc;
    }
  }
}

// Launches the kernels above for whichever of dparcel, dtime, dmask is non-null (dmask needs visible_slot).
// Uses scratch slot `scratch_slot` for the partials.
template <typename T>
void embedding_grads(float* dparcel, float* dtime, float* dmask, const T* src, const int32_t* row_of,
                     const int32_t* visible_slot, int B, int N, int rows_per_sample, int P, int D, int scratch_slot,
                     cudaStream_t stream, const char* what) {
  if (B == 0 || N == 0) return;
  if (dparcel != nullptr) {
    parcel_grad_kernel<T><<<grid_for(int64_t(P) * D, 256), 256, 0, stream>>>(dparcel, src, row_of, B, N,
                                                                              rows_per_sample, P, D);
    check_launch(what);
  }
  if (dtime == nullptr && dmask == nullptr) return;
  const int n_t = N / P;
  const size_t count = size_t(B) * n_t * D;
  ScratchCarve carve;
  const size_t at_time = carve.add<float>(count), at_masked = carve.add<float>(count);
  void* base = scratch(carve.bytes(), stream, scratch_slot);
  float* time_partial = dtime != nullptr ? ScratchCarve::at<float>(base, at_time) : nullptr;
  float* masked_partial = dmask != nullptr ? ScratchCarve::at<float>(base, at_masked) : nullptr;
  time_grad_partials_kernel<T><<<grid_for(int64_t(count), 256), 256, 0, stream>>>(
      time_partial, masked_partial, src, row_of, visible_slot, B, N, rows_per_sample, P, D);
  check_launch(what);
  const int64_t n_out = (dtime != nullptr ? int64_t(n_t) * D : 0) + (dmask != nullptr ? D : 0);
  time_grad_reduce_kernel<float>
      <<<grid_for(n_out, 256), 256, 0, stream>>>(dtime, dmask, time_partial, masked_partial, B, n_t, D);
  check_launch(what);
}

}  // namespace bfm::kernels::cuda::detail
