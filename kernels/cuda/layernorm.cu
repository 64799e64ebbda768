// LayerNorm over the last dimension on the GPU (kernels/cpu/layernorm.cpp is its oracle):
//   y = (x - mean) * rstd * w + b, biased variance, rstd = 1 / sqrt(var + eps).
// x, y, dy, dx are T (float or bf16); w, b, mean, rstd, dw, db fp32; all arithmetic fp32.
//
// Forward and dx: one warp per row (8 rows per 256-thread block), each lane walking columns c = lane, lane + 32, ...
// (coalesced), so any C works; the row statistics are two passes (mean, then the sum of squared deviations) reduced
// by warp shuffles in a fixed order.
// Backward has a one-pass fast path for the model's widths (layernorm_backward_fused_kernel, below); otherwise
// dw, db are sums over all M rows, deterministic without atomics: the rows are cut into at most kMaxChunks chunks (a
// number fixed by M alone); block (column tile of 32, chunk) sums its chunk into a partial [chunk, 2, C] in scratch,
// then one thread per column adds the partials in chunk order (in double) into dw, db.
#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/layernorm.h"

namespace bfm::kernels::cuda {
namespace {

using detail::from_float;
using detail::to_float;
using detail::warp_sum;

constexpr int kRowBlock = 256;                      // 8 warps, 8 rows per block
constexpr int kRowsPerBlock = kRowBlock / 32;
constexpr int kColumnTile = 32;                     // parameter-gradient partials: 32 columns x 8 row lanes
constexpr int kRowLanes = 8;
constexpr int64_t kMaxChunks = 256;
constexpr int64_t kMinChunkRows = 32;

template <typename T>
__global__ void layernorm_forward_kernel(T* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd,
                                         const T* __restrict__ x, const float* __restrict__ w,
                                         const float* __restrict__ b, int64_t M, int C, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * int64_t(kRowsPerBlock) + (threadIdx.x >> 5);
  if (row >= M) return;  // the whole warp leaves together
  const T* xr = x + row * C;
  float sum = 0.0f;
  for (int c = lane; c < C; c += 32) sum += to_float(xr[c]);
  const float mu = warp_sum(sum) / C;
  float sq = 0.0f;
  for (int c = lane; c < C; c += 32) {
    const float d = to_float(xr[c]) - mu;
    sq += d * d;
  }
  const float s = 1.0f / sqrtf(warp_sum(sq) / C + eps);
  T* yr = y + row * C;
  for (int c = lane; c < C; c += 32) yr[c] = from_float<T>((to_float(xr[c]) - mu) * s * w[c] + b[c]);
  if (lane == 0) {
    mean[row] = mu;
    rstd[row] = s;
  }
}

// With xhat = (x - mean) rstd and g = dy * w:  dx += rstd * (g - mean_c(g) - xhat * mean_c(g * xhat)).
template <typename T>
__global__ void layernorm_dx_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ x,
                                    const float* __restrict__ w, const float* __restrict__ mean,
                                    const float* __restrict__ rstd, int64_t M, int C) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * int64_t(kRowsPerBlock) + (threadIdx.x >> 5);
  if (row >= M) return;
  const T* xr = x + row * C;
  const T* dyr = dy + row * C;
  const float m = mean[row], s = rstd[row];
  float sum_g = 0.0f, sum_gx = 0.0f;
  for (int c = lane; c < C; c += 32) {
    const float g = to_float(dyr[c]) * w[c];
    sum_g += g;
    sum_gx += g * ((to_float(xr[c]) - m) * s);
  }
  const float mean_g = warp_sum(sum_g) / C;
  const float mean_gx = warp_sum(sum_gx) / C;
  T* dxr = dx + row * C;
  for (int c = lane; c < C; c += 32) {
    const float xhat = (to_float(xr[c]) - m) * s;
    dxr[c] = from_float<T>(to_float(dxr[c]) + s * (to_float(dyr[c]) * w[c] - mean_g - xhat * mean_gx));
  }
}

// partial [n_chunks, 2, C]: [chunk, 0, c] = sum over the chunk's rows of dy * xhat, [chunk, 1, c] = of dy.
// Block (32, 8): threadIdx.x picks the column of the tile, threadIdx.y strides the chunk's rows; the 8 row lanes are
// then added in order through shared memory.
template <typename T>
__global__ void layernorm_param_partials_kernel(float* __restrict__ partial, const T* __restrict__ dy,
                                                const T* __restrict__ x, const float* __restrict__ mean,
                                                const float* __restrict__ rstd, int64_t M, int C,
                                                int64_t chunk_rows) {
  __shared__ float acc_w[kRowLanes][kColumnTile + 1], acc_b[kRowLanes][kColumnTile + 1];
  const int c = blockIdx.x * kColumnTile + threadIdx.x;
  const int64_t r0 = blockIdx.y * chunk_rows;
  const int64_t r1 = min(M, r0 + chunk_rows);
  float aw = 0.0f, ab = 0.0f;
  if (c < C) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowLanes) {
      const float g = to_float(dy[r * C + c]);
      aw += g * ((to_float(x[r * C + c]) - mean[r]) * rstd[r]);
      ab += g;
    }
  }
  acc_w[threadIdx.y][threadIdx.x] = aw;
  acc_b[threadIdx.y][threadIdx.x] = ab;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float tw = 0.0f, tb = 0.0f;
#pragma unroll
    for (int k = 0; k < kRowLanes; ++k) {
      tw += acc_w[k][threadIdx.x];
      tb += acc_b[k][threadIdx.x];
    }
    partial[(blockIdx.y * 2 + 0) * int64_t(C) + c] = tw;
    partial[(blockIdx.y * 2 + 1) * int64_t(C) + c] = tb;
  }
}

// dw [C] += sum over chunks of partial[chunk, 0], db [C] += of partial[chunk, 1], in chunk order.
__global__ void layernorm_param_reduce_kernel(float* __restrict__ dw, float* __restrict__ db,
                                              const float* __restrict__ partial, int n_chunks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double tw = 0.0, tb = 0.0;
  for (int k = 0; k < n_chunks; ++k) {
    tw += partial[(k * 2 + 0) * int64_t(C) + c];
    tb += partial[(k * 2 + 1) * int64_t(C) + c];
  }
  if (dw != nullptr) dw[c] += static_cast<float>(tw);
  if (db != nullptr) db[c] += static_cast<float>(tb);
}

// The fast backward for the widths the model uses (C a multiple of the 16-byte vector, C <= 1024, 16-byte aligned
// rows): ONE pass over x and dy. Block k owns rows [k * rows_per_block, ...); each warp takes every 8th row of
// them, reads x and dy as 16-byte vectors into registers, writes dx, and keeps its own running dw and db for the
// columns its lane holds; at the end the 8 warps' sums are added in warp order through shared memory into the
// block's partial [k, 2, C], which layernorm_param_reduce_kernel adds in block order. The number of blocks depends
// on M alone, so the result repeats bit for bit.
constexpr int kFusedMaxC = 1024;

template <typename T, int NV>
__global__ void __launch_bounds__(256) layernorm_backward_fused_kernel(
    T* __restrict__ dx, float* __restrict__ partial, const T* __restrict__ dy, const T* __restrict__ x,
    const float* __restrict__ w, const float* __restrict__ mean, const float* __restrict__ rstd, int64_t M, int C,
    int64_t rows_per_block) {
  constexpr int V = 16 / sizeof(T);
  using Pack = detail::Pack16<T>;
  __shared__ float red[8][kFusedMaxC];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t r0 = blockIdx.x * rows_per_block;
  const int64_t r1 = min(M, r0 + rows_per_block);
  float acc_w[NV][V], acc_b[NV][V], wv[NV][V];
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int c0 = (i * 32 + lane) * V;
#pragma unroll
    for (int e = 0; e < V; ++e) {
      acc_w[i][e] = acc_b[i][e] = 0.0f;
      wv[i][e] = c0 < C ? w[c0 + e] : 0.0f;
    }
  }
  for (int64_t r = r0 + warp; r < r1; r += 8) {
    Pack xp[NV], gp[NV];
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int c0 = (i * 32 + lane) * V;
      if (c0 < C) {
        xp[i] = *reinterpret_cast<const Pack*>(x + r * C + c0);
        gp[i] = *reinterpret_cast<const Pack*>(dy + r * C + c0);
      }
    }
    const float m = mean[r], sd = rstd[r];
    float sum_g = 0.0f, sum_gx = 0.0f;
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      if ((i * 32 + lane) * V >= C) continue;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float xh = (to_float(xp[i].v[e]) - m) * sd;
        const float d = to_float(gp[i].v[e]);
        const float g = d * wv[i][e];
        sum_g += g;
        sum_gx += g * xh;
        acc_w[i][e] += d * xh;
        acc_b[i][e] += d;
      }
    }
    const float mean_g = warp_sum(sum_g) / C;
    const float mean_gx = warp_sum(sum_gx) / C;
    if (dx == nullptr) continue;  // dw, db only
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int c0 = (i * 32 + lane) * V;
      if (c0 >= C) continue;
      Pack* out = reinterpret_cast<Pack*>(dx + r * C + c0);
      Pack o = *out;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float xh = (to_float(xp[i].v[e]) - m) * sd;
        const float g = to_float(gp[i].v[e]) * wv[i][e];
        o.v[e] = from_float<T>(to_float(o.v[e]) + sd * (g - mean_g - xh * mean_gx));
      }
      *out = o;
    }
  }
  // dw then db: the 8 warps' sums added in warp order.
#pragma unroll
  for (int pass = 0; pass < 2; ++pass) {
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int c0 = (i * 32 + lane) * V;
      if (c0 >= C) continue;
#pragma unroll
      for (int e = 0; e < V; ++e) red[warp][c0 + e] = pass == 0 ? acc_w[i][e] : acc_b[i][e];
    }
    __syncthreads();
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      float t = 0.0f;
#pragma unroll
      for (int k = 0; k < 8; ++k) t += red[k][c];
      partial[(blockIdx.x * 2 + pass) * int64_t(C) + c] = t;
    }
    __syncthreads();
  }
}

template <typename T, int NV>
void launch_fused_backward(T* dx, float* partial, const T* dy, const T* x, const float* w, const float* mean,
                           const float* rstd, int64_t M, int C, int64_t n_blocks, int64_t rows_per_block,
                           cudaStream_t stream) {
  layernorm_backward_fused_kernel<T, NV><<<static_cast<unsigned>(n_blocks), 256, 0, stream>>>(
      dx, partial, dy, x, w, mean, rstd, M, C, rows_per_block);
}

}  // namespace

template <typename T>
void layernorm_forward(T* y, float* mean, float* rstd, const T* x, const float* w, const float* b, int64_t M, int C,
                       float eps, cudaStream_t stream) {
  require(M >= 0 && C > 0, "cuda::layernorm_forward: bad sizes M=", M, " C=", C);
  if (M == 0) return;
  const int64_t blocks = (M + kRowsPerBlock - 1) / kRowsPerBlock;
  require(blocks <= 0x7fffffff, "cuda::layernorm_forward: too many rows M=", M);
  layernorm_forward_kernel<T><<<static_cast<unsigned>(blocks), kRowBlock, 0, stream>>>(y, mean, rstd, x, w, b, M, C,
                                                                                       eps);
  detail::check_launch("cuda::layernorm_forward");
}

template <typename T>
void layernorm_backward(T* dx, float* dw, float* db, const T* dy, const T* x, const float* w, const float* mean,
                        const float* rstd, int64_t M, int C, cudaStream_t stream) {
  require(M >= 0 && C > 0, "cuda::layernorm_backward: bad sizes M=", M, " C=", C);
  if (M == 0) return;
  constexpr int V = 16 / sizeof(T);
  // The fast path also serves dw/db-only calls, so that they add in the same order (the same bits) as a full one.
  if ((dw != nullptr || db != nullptr) && C % V == 0 && C <= kFusedMaxC && C <= 4 * 32 * V &&
      (dx == nullptr || detail::aligned16(dx)) && detail::aligned16(dy) && detail::aligned16(x)) {
    const int64_t n_blocks = std::min<int64_t>(256, (M + 31) / 32);
    const int64_t rows_per_block = (M + n_blocks - 1) / n_blocks;
    const int64_t used = (M + rows_per_block - 1) / rows_per_block;
    float* partial = static_cast<float*>(detail::scratch(sizeof(float) * 2 * used * C, stream));
    const int nv = (C / V + 31) / 32;  // vectors per lane
    switch (nv) {
      case 1: launch_fused_backward<T, 1>(dx, partial, dy, x, w, mean, rstd, M, C, used, rows_per_block, stream); break;
      case 2: launch_fused_backward<T, 2>(dx, partial, dy, x, w, mean, rstd, M, C, used, rows_per_block, stream); break;
      case 3: launch_fused_backward<T, 3>(dx, partial, dy, x, w, mean, rstd, M, C, used, rows_per_block, stream); break;
      default: launch_fused_backward<T, 4>(dx, partial, dy, x, w, mean, rstd, M, C, used, rows_per_block, stream); break;
    }
    detail::check_launch("cuda::layernorm_backward (fused)");
    layernorm_param_reduce_kernel<<<(C + 255) / 256, 256, 0, stream>>>(dw, db, partial, static_cast<int>(used), C);
    detail::check_launch("cuda::layernorm_backward (dw, db)");
    return;
  }
  if (dx != nullptr) {
    const int64_t blocks = (M + kRowsPerBlock - 1) / kRowsPerBlock;
    require(blocks <= 0x7fffffff, "cuda::layernorm_backward: too many rows M=", M);
    layernorm_dx_kernel<T><<<static_cast<unsigned>(blocks), kRowBlock, 0, stream>>>(dx, dy, x, w, mean, rstd, M, C);
    detail::check_launch("cuda::layernorm_backward (dx)");
  }
  if (dw == nullptr && db == nullptr) return;
  // The chunking depends on M alone, so the order of every addition (and so the result) is fixed for a shape.
  int64_t n_chunks = std::min(kMaxChunks, (M + kMinChunkRows - 1) / kMinChunkRows);
  const int64_t chunk_rows = (M + n_chunks - 1) / n_chunks;
  n_chunks = (M + chunk_rows - 1) / chunk_rows;
  float* partial = static_cast<float*>(detail::scratch(sizeof(float) * 2 * n_chunks * C, stream));
  const dim3 grid((C + kColumnTile - 1) / kColumnTile, static_cast<unsigned>(n_chunks));
  layernorm_param_partials_kernel<T><<<grid, dim3(kColumnTile, kRowLanes), 0, stream>>>(partial, dy, x, mean, rstd, M,
                                                                                       C, chunk_rows);
  detail::check_launch("cuda::layernorm_backward (dw, db partials)");
  layernorm_param_reduce_kernel<<<(C + 255) / 256, 256, 0, stream>>>(dw, db, partial, static_cast<int>(n_chunks), C);
  detail::check_launch("cuda::layernorm_backward (dw, db)");
}

template void layernorm_forward<float>(float*, float*, float*, const float*, const float*, const float*, int64_t,
                                       int, float, cudaStream_t);
template void layernorm_forward<bf16>(bf16*, float*, float*, const bf16*, const float*, const float*, int64_t, int,
                                      float, cudaStream_t);
template void layernorm_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                        const float*, const float*, int64_t, int, cudaStream_t);
template void layernorm_backward<bf16>(bf16*, float*, float*, const bf16*, const bf16*, const float*, const float*,
                                       const float*, int64_t, int, cudaStream_t);

}  // namespace bfm::kernels::cuda
