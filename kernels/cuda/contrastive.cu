// Symmetric contrastive (CLIP) loss on the GPU, forward and backward fused (kernels/cpu/contrastive.cpp is its
// oracle):
//   zb = brain / max(|brain|, 1e-12), zs = stim / max(|stim|, 1e-12), s = exp(min(logit_scale, max_logit_scale)),
//   logits = s zb zs^T [B, B], loss = (1/2B) sum_i [(lse_row_i - logits_ii) + (lse_col_i - logits_ii)].
// Backward: dlogits[i, j] = g (softmax_row_i[j] + softmax_col_j[i] - 2 delta_ij), g = dloss / 2B;
// dlogit_scale = sum dlogits * logits (zero when logit_scale is clamped above the maximum); dzb = s dlogits zs,
// dzs = s dlogits^T zb; and through z = u / |u|: du = (dz - z (z . dz)) / |u| (dz / eps where the norm was clamped).
//
// B is a batch (up to about a thousand rows), so the gram matrix zb zs^T is kept whole in scratch, fp32 (4 B^2 bytes:
// 4 MiB at B = 1024), as on the CPU. The kernels, in stream order, all fp32 with the final sums in double:
//   normalize (one block per row of brain and stim) -> gram (32 x 32 tiled GEMM) -> row and column log-sum-exps
//   (one block per row / column) -> dlogits in place of the gram and per-row d/ds partials (one block per row)
//   -> loss and dlogit_scale (one block, rows in order) -> dzb, dzs (tiled GEMMs) -> du (one block per row).
// Every sum has a fixed order (block reductions, rows in order), so a run repeats bit for bit.
#include "kernels/contrastive.h"
#include "kernels/cuda/common.cuh"

namespace bfm::kernels::cuda {
namespace {

using detail::from_float;
using detail::to_float;

constexpr int kBlock = 256;
constexpr float kNormEps = 1e-12f;
constexpr int kTile = 32;      // GEMM tile: 32 x 32 outputs per block of (32, 8) threads, 4 rows each
constexpr int kTileRows = 8;

__device__ __forceinline__ float logit_scale_of(const float* logit_scale, float max_logit_scale) {
  return expf(fminf(*logit_scale, max_logit_scale));
}

// z [2B, E] (rows 0..B-1 from brain, B..2B-1 from stim), norm [2B] (clamped to at least kNormEps).
template <typename T>
__global__ void normalize_kernel(float* __restrict__ z, float* __restrict__ norm, const T* __restrict__ brain,
                                 const T* __restrict__ stim, int B, int E) {
  __shared__ float shared[32];
  const int row = blockIdx.x;
  const T* u = (row < B ? brain : stim) + int64_t(row < B ? row : row - B) * E;
  float sq = 0.0f;
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    const float x = to_float(u[e]);
    sq += x * x;
  }
  sq = detail::block_sum(sq, shared);
  const float n = fmaxf(sqrtf(sq), kNormEps);
  const float inv = 1.0f / n;
  float* zr = z + int64_t(row) * E;
  for (int e = threadIdx.x; e < E; e += blockDim.x) zr[e] = to_float(u[e]) * inv;
  if (threadIdx.x == 0) norm[row] = n;
}

// c [M, N] (row stride ldc) = sum_k a(i, k) b(k, j), a(i, k) = a[i * a_i + k * a_k], b(k, j) = b[k * b_k + j * b_j]:
// the strides name the transposes. 32 x 32 tiles through shared memory; each thread owns 4 outputs of a column.
__global__ void gemm_kernel(float* __restrict__ c, const float* __restrict__ a, const float* __restrict__ b, int M,
                            int N, int K, int64_t a_i, int64_t a_k, int64_t b_k, int64_t b_j, int64_t ldc) {
  __shared__ float a_tile[kTile][kTile + 1];  // [i][k]
  __shared__ float b_tile[kTile][kTile + 1];  // [k][j]
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int i0 = blockIdx.y * kTile, j0 = blockIdx.x * kTile;
  float acc[kTile / kTileRows] = {};
  for (int k0 = 0; k0 < K; k0 += kTile) {
#pragma unroll
    for (int q = 0; q < kTile / kTileRows; ++q) {
      const int r = ty + q * kTileRows;
      a_tile[r][tx] = (i0 + r < M && k0 + tx < K) ? a[(i0 + r) * a_i + (k0 + tx) * a_k] : 0.0f;
      b_tile[r][tx] = (k0 + r < K && j0 + tx < N) ? b[(k0 + r) * b_k + (j0 + tx) * b_j] : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kTile; ++kk) {
      const float bv = b_tile[kk][tx];
#pragma unroll
      for (int q = 0; q < kTile / kTileRows; ++q) acc[q] += a_tile[ty + q * kTileRows][kk] * bv;
    }
    __syncthreads();
  }
#pragma unroll
  for (int q = 0; q < kTile / kTileRows; ++q) {
    const int i = i0 + ty + q * kTileRows, j = j0 + tx;
    if (i < M && j < N) c[i * ldc + j] = acc[q];
  }
}

void gemm(float* c, const float* a, const float* b, int M, int N, int K, int64_t a_i, int64_t a_k, int64_t b_k,
          int64_t b_j, int64_t ldc, cudaStream_t stream, const char* what) {
  const dim3 grid((N + kTile - 1) / kTile, (M + kTile - 1) / kTile);
  gemm_kernel<<<grid, dim3(kTile, kTileRows), 0, stream>>>(c, a, b, M, N, K, a_i, a_k, b_k, b_j, ldc);
  detail::check_launch(what);
}

// lse [2B]: [i] = log-sum-exp of logits row i, [B + i] = of column i; blockIdx.y picks rows (0) or columns (1).
__global__ void lse_kernel(float* __restrict__ lse, const float* __restrict__ gram,
                           const float* __restrict__ logit_scale, float max_logit_scale, int B) {
  __shared__ float shared[32];
  const float s = logit_scale_of(logit_scale, max_logit_scale);
  const int i = blockIdx.x;
  const bool column = blockIdx.y == 1;
  const int64_t base = column ? i : int64_t(i) * B, step = column ? B : 1;
  float mx = __int_as_float(0xff800000u);  // -inf
  for (int k = threadIdx.x; k < B; k += blockDim.x) mx = fmaxf(mx, s * gram[base + k * step]);
  mx = detail::block_max(mx, shared);
  float sum = 0.0f;
  for (int k = threadIdx.x; k < B; k += blockDim.x) sum += expf(s * gram[base + k * step] - mx);
  sum = detail::block_sum(sum, shared);
  if (threadIdx.x == 0) lse[(column ? B : 0) + i] = mx + logf(sum);
}

// In place over row i of the gram: dgram[i, j] = s * dlogits[i, j]; ds_row[i] = sum_j dlogits[i, j] logits[i, j].
__global__ void dlogits_kernel(float* __restrict__ gram, float* __restrict__ ds_row, const float* __restrict__ lse,
                               const float* __restrict__ logit_scale, float max_logit_scale, int B, float g) {
  __shared__ float shared[32];
  const float s = logit_scale_of(logit_scale, max_logit_scale);
  const int i = blockIdx.x;
  const float lse_row = lse[i];
  float acc = 0.0f;
  for (int j = threadIdx.x; j < B; j += blockDim.x) {
    float* entry = gram + int64_t(i) * B + j;
    const float l = s * *entry;
    float dl = expf(l - lse_row) + expf(l - lse[B + j]);
    if (i == j) dl -= 2.0f;
    dl *= g;
    acc += dl * l;
    *entry = dl * s;
  }
  acc = detail::block_sum(acc, shared);
  if (threadIdx.x == 0) ds_row[i] = acc;
}

// *loss = (1/2B) sum_i (lse_row_i + lse_col_i - 2 logits_ii), the diagonal from diag [B]; *dlogit_scale +=
// sum_i ds_row[i] when ds_row and dlogit_scale are non-null and the scale is not clamped (as torch.clamp: at equality
// the gradient flows). One block; the rows in a fixed order.
__global__ void finish_kernel(float* __restrict__ loss, float* __restrict__ dlogit_scale,
                              const float* __restrict__ lse, const float* __restrict__ diag,
                              const float* __restrict__ ds_row, const float* __restrict__ logit_scale,
                              float max_logit_scale, int B) {
  __shared__ double shared[32];
  const float s = logit_scale_of(logit_scale, max_logit_scale);
  double sum = 0.0, ds = 0.0;
  for (int i = threadIdx.x; i < B; i += blockDim.x) {
    const float l_ii = s * diag[i];
    sum += (static_cast<double>(lse[i]) - l_ii) + (static_cast<double>(lse[B + i]) - l_ii);
    if (ds_row != nullptr) ds += ds_row[i];
  }
  sum = detail::block_sum(sum, shared);
  ds = detail::block_sum(ds, shared);
  if (threadIdx.x == 0) {
    *loss = static_cast<float>(sum / (2.0 * B));
    if (ds_row != nullptr && dlogit_scale != nullptr && *logit_scale <= max_logit_scale)
      *dlogit_scale += static_cast<float>(ds);
  }
}

// diag [B] = gram[i, i] (saved before dlogits_kernel overwrites the gram).
__global__ void diag_kernel(float* __restrict__ diag, const float* __restrict__ gram, int B) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < B; i += gridDim.x * blockDim.x)
    diag[i] = gram[int64_t(i) * B + i];
}

// du [B, E] += (dz - z (z . dz)) / |u| for row blockIdx.x of brain (rows < B) or stim; a null du skips its rows.
template <typename T>
__global__ void normalize_backward_kernel(T* __restrict__ dbrain, T* __restrict__ dstim, const float* __restrict__ dz,
                                          const float* __restrict__ z, const float* __restrict__ norm, int B, int E) {
  __shared__ float shared[32];
  const int row = blockIdx.x;
  T* du = row < B ? dbrain : dstim;
  if (du == nullptr) return;  // the whole block leaves together
  du += int64_t(row < B ? row : row - B) * E;
  const float* zr = z + int64_t(row) * E;
  const float* dzr = dz + int64_t(row) * E;
  const float n = norm[row];
  // Where the norm was clamped, |u| is a constant and only dz / eps remains.
  float dot = 0.0f;
  if (n > kNormEps) {
    for (int e = threadIdx.x; e < E; e += blockDim.x) dot += zr[e] * dzr[e];
    dot = detail::block_sum(dot, shared);
  }
  const float inv = 1.0f / n;
  for (int e = threadIdx.x; e < E; e += blockDim.x)
    du[e] = from_float<T>(to_float(du[e]) + (dzr[e] - zr[e] * dot) * inv);
}

}  // namespace

template <typename T>
void contrastive(float* loss, T* dbrain, T* dstim, float* dlogit_scale, const T* brain, const T* stim,
                 const float* logit_scale, float max_logit_scale, int B, int E, float dloss, cudaStream_t stream) {
  require(B > 0 && E > 0, "cuda::contrastive: bad sizes B=", B, " E=", E);
  require(B <= 65535, "cuda::contrastive: batch B=", B, " exceeds the grid limit 65535");
  const bool backward = dbrain != nullptr || dstim != nullptr || dlogit_scale != nullptr;
  const size_t BE = size_t(B) * E;
  detail::ScratchCarve carve;
  const size_t at_z = carve.add<float>(2 * BE), at_norm = carve.add<float>(2 * size_t(B)),
               at_gram = carve.add<float>(size_t(B) * B), at_lse = carve.add<float>(2 * size_t(B)),
               at_diag = carve.add<float>(B), at_ds = carve.add<float>(B),
               at_dz = carve.add<float>(backward ? 2 * BE : 0);
  void* base = detail::scratch(carve.bytes(), stream);
  float* z = detail::ScratchCarve::at<float>(base, at_z);  // [2B, E]: zb then zs
  float* norm = detail::ScratchCarve::at<float>(base, at_norm);
  float* gram = detail::ScratchCarve::at<float>(base, at_gram);  // [B, B]: zb zs^T, then s dlogits
  float* lse = detail::ScratchCarve::at<float>(base, at_lse);
  float* diag = detail::ScratchCarve::at<float>(base, at_diag);
  float* ds_row = detail::ScratchCarve::at<float>(base, at_ds);
  float* dz = detail::ScratchCarve::at<float>(base, at_dz);  // [2B, E]: dzb then dzs
  const float* zb = z;
  const float* zs = z + BE;

  normalize_kernel<T><<<2 * B, kBlock, 0, stream>>>(z, norm, brain, stim, B, E);
  detail::check_launch("cuda::contrastive (normalize)");
  // gram [B, B] = zb zs^T: a(i, k) = zb[i E + k], b(k, j) = zs[j E + k].
  gemm(gram, zb, zs, B, B, E, E, 1, 1, E, B, stream, "cuda::contrastive (gram)");
  lse_kernel<<<dim3(B, 2), kBlock, 0, stream>>>(lse, gram, logit_scale, max_logit_scale, B);
  detail::check_launch("cuda::contrastive (log-sum-exp)");
  diag_kernel<<<detail::grid_for(B, kBlock), kBlock, 0, stream>>>(diag, gram, B);
  detail::check_launch("cuda::contrastive (diagonal)");
  if (backward) {
    const float g = static_cast<float>(static_cast<double>(dloss) / (2.0 * B));
    dlogits_kernel<<<B, kBlock, 0, stream>>>(gram, ds_row, lse, logit_scale, max_logit_scale, B, g);
    detail::check_launch("cuda::contrastive (dlogits)");
  }
  finish_kernel<<<1, kBlock, 0, stream>>>(loss, dlogit_scale, lse, diag, backward ? ds_row : nullptr, logit_scale,
                                          max_logit_scale, B);
  detail::check_launch("cuda::contrastive (loss)");
  if (dbrain == nullptr && dstim == nullptr) return;
  const float* dgram = gram;
  // dzb [B, E] = dgram zs: a(i, k) = dgram[i B + k], b(k, j) = zs[k E + j].
  if (dbrain != nullptr) gemm(dz, dgram, zs, B, E, B, B, 1, E, 1, E, stream, "cuda::contrastive (dzb)");
  // dzs [B, E] = dgram^T zb: a(i, k) = dgram[k B + i], b(k, j) = zb[k E + j].
  if (dstim != nullptr) gemm(dz + BE, dgram, zb, B, E, B, 1, B, E, 1, E, stream, "cuda::contrastive (dzs)");
  normalize_backward_kernel<T><<<2 * B, kBlock, 0, stream>>>(dbrain, dstim, dz, z, norm, B, E);
  detail::check_launch("cuda::contrastive (normalize backward)");
}

template void contrastive<float>(float*, float*, float*, float*, const float*, const float*, const float*, float, int,
                                 int, float, cudaStream_t);
template void contrastive<bf16>(float*, bf16*, bf16*, float*, const bf16*, const bf16*, const float*, float, int, int,
                                float, cudaStream_t);

}  // namespace bfm::kernels::cuda
