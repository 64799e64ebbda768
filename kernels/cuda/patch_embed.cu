// Tokens of a window and their embedding on the GPU (kernels/cpu/patch_embed.cpp is its oracle):
//   token i = j * P + p holds x[j*L + l, p];  e_i = W x_patch_i + b + parcel_embed[p] + time_embed[j].
// patches stay fp32 (they are the loss targets too); W, b and the embeddings are the fp32 master copy; out and dout
// are T. L (patch_len) is small, so the projection is a plain loop, not a GEMM.
//
// Forward: a block embeds kTokens rows; their patches sit in shared memory and each thread owns columns d,
// reading W's row d once for all kTokens rows.
// Backward, without atomics, every sum in a fixed order:
//  - dw [D, L] and db [D]: the rows are cut into at most kMaxChunks chunks (a number fixed by the shapes); block
//    (tile of 32 columns d, chunk) walks its chunk kRowTile rows at a time through shared memory, each thread owning
//    some (d, l) outputs (l = L stands for db) in a shared accumulator; a second kernel adds the chunk partials in
//    order.
//  - dparcel_embed, dtime_embed: with a token_index, an inverse map slot [B, N] (the output row of each position or
//    -1) is scattered first (distinct positions make that race-free); then detail::embedding_grads sums over
//    positions in order.
#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/patch_embed.h"

namespace bfm::kernels::cuda {
namespace {

using detail::from_float;
using detail::to_float;

constexpr int kTokens = 8;          // forward: rows per block
constexpr int kForwardBlock = 128;
constexpr int kColumnTile = 32;     // backward: columns d per block
constexpr int kRowTile = 32;        // backward: rows staged in shared memory at a time
constexpr int kBackwardBlock = 256;
constexpr int64_t kMaxChunks = 128;
constexpr int64_t kMinChunkRows = 64;
constexpr int kScratchPartials = 0, kScratchSlots = 1, kScratchEmbed = 2;  // scratch slots used here
constexpr size_t kMaxSharedBytes = 48 * 1024;

// The output row -> token map of the CPU twin: token_index[row] or, without one, row % n_tok.
__device__ __forceinline__ int token_of(const int32_t* token_index, int64_t row, int n_tok) {
  return token_index != nullptr ? token_index[row] : static_cast<int>(row % n_tok);
}

// x [B, T, P] -> patches [B, n_t * P, L]: one thread per output element.
__global__ void patchify_kernel(float* __restrict__ patches, const float* __restrict__ x, int B, int T, int P,
                                int L) {
  const int n_t = T / L;
  const int64_t N = int64_t(n_t) * P;
  const int64_t total = int64_t(B) * N * L;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int l = static_cast<int>(e % L);
    const int64_t token = (e / L) % N;
    const int64_t b = e / (N * L);
    const int64_t j = token / P, p = token % P;
    patches[e] = x[(b * T + j * L + l) * P + p];
  }
}

// out [B * n_tok, D]; shared: the kTokens rows' patches [kTokens, L].
template <typename T>
__global__ void patch_embed_forward_kernel(T* __restrict__ out, const float* __restrict__ patches,
                                           const float* __restrict__ w, const float* __restrict__ bias,
                                           const float* __restrict__ parcel_embed,
                                           const float* __restrict__ time_embed,
                                           const int32_t* __restrict__ token_index, int B, int N, int n_tok, int P,
                                           int L, int D) {
  extern __shared__ float patch_rows[];  // [kTokens, L]
  __shared__ int token[kTokens];         // -1: past the end, or an index outside [0, N)
  const int64_t rows = int64_t(B) * n_tok;
  const int64_t row0 = blockIdx.x * int64_t(kTokens);
  if (threadIdx.x < kTokens) {
    const int64_t row = row0 + threadIdx.x;
    const int i = row < rows ? token_of(token_index, row, n_tok) : -1;
    token[threadIdx.x] = (i >= 0 && i < N) ? i : -1;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < kTokens * L; e += blockDim.x) {
    const int r = e / L, l = e % L;
    const int64_t b = (row0 + r) / n_tok;
    patch_rows[e] = token[r] >= 0 ? patches[(b * N + token[r]) * L + l] : 0.0f;
  }
  __syncthreads();
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc[kTokens];
#pragma unroll
    for (int r = 0; r < kTokens; ++r) acc[r] = 0.0f;
    const float* wd = w + int64_t(d) * L;
    for (int l = 0; l < L; ++l) {
      const float wl = wd[l];
#pragma unroll
      for (int r = 0; r < kTokens; ++r) acc[r] += wl * patch_rows[r * L + l];
    }
    const float bd = bias != nullptr ? bias[d] : 0.0f;
#pragma unroll
    for (int r = 0; r < kTokens; ++r) {
      const int i = token[r];
      if (i < 0) continue;
      const float embed = parcel_embed[int64_t(i % P) * D + d] + time_embed[int64_t(i / P) * D + d];
      out[(row0 + r) * D + d] = from_float<T>((acc[r] + bd) + embed);
    }
  }
}

// partial [n_chunks, D * (L + 1)]: [chunk, d * L + l] = sum over the chunk's rows of dout[row, d] * patch[row, l],
// [chunk, D * L + d] = sum of dout[row, d].
// Shared: acc [32 * (L + 1)] (output (d_local, l) at d_local * (L + 1) + l, l = L for db; each thread owns the
// entries o = threadIdx.x + k * blockDim.x), grad [kRowTile, 32], patch [kRowTile, L].
template <typename T>
__global__ void patch_embed_param_partials_kernel(float* __restrict__ partial, const T* __restrict__ dout,
                                                  const float* __restrict__ patches,
                                                  const int32_t* __restrict__ token_index, int N, int n_tok, int L,
                                                  int D, int64_t rows, int64_t chunk_rows) {
  extern __shared__ float shared[];
  float* acc = shared;
  float* grad = acc + kColumnTile * (L + 1);
  float* patch = grad + kRowTile * kColumnTile;
  const int n_out = kColumnTile * (L + 1);
  const int d0 = blockIdx.x * kColumnTile;
  for (int o = threadIdx.x; o < n_out; o += blockDim.x) acc[o] = 0.0f;
  const int64_t r_begin = blockIdx.y * chunk_rows;
  const int64_t r_end = min(rows, r_begin + chunk_rows);
  for (int64_t t0 = r_begin; t0 < r_end; t0 += kRowTile) {
    __syncthreads();  // the previous tile has been used
    for (int e = threadIdx.x; e < kRowTile * kColumnTile; e += blockDim.x) {
      const int64_t row = t0 + e / kColumnTile;
      const int d = d0 + e % kColumnTile;
      grad[e] = (row < r_end && d < D) ? to_float(dout[row * D + d]) : 0.0f;
    }
    for (int e = threadIdx.x; e < kRowTile * L; e += blockDim.x) {
      const int64_t row = t0 + e / L;
      const int l = e % L;
      float value = 0.0f;
      if (row < r_end) {
        const int i = token_of(token_index, row, n_tok);
        if (i >= 0 && i < N) value = patches[((row / n_tok) * N + i) * L + l];
      }
      patch[e] = value;
    }
    __syncthreads();
    for (int o = threadIdx.x; o < n_out; o += blockDim.x) {
      const int dl = o / (L + 1), l = o % (L + 1);
      float a = acc[o];
      if (l < L) {
        for (int r = 0; r < kRowTile; ++r) a += grad[r * kColumnTile + dl] * patch[r * L + l];
      } else {
        for (int r = 0; r < kRowTile; ++r) a += grad[r * kColumnTile + dl];
      }
      acc[o] = a;
    }
  }
  // Each thread reads back only the entries it wrote.
  float* mine = partial + blockIdx.y * (int64_t(D) * (L + 1));
  for (int o = threadIdx.x; o < n_out; o += blockDim.x) {
    const int dl = o / (L + 1), l = o % (L + 1);
    const int d = d0 + dl;
    if (d < D) mine[l < L ? int64_t(d) * L + l : int64_t(D) * L + d] = acc[o];
  }
}

// dw [D * L] += column sums over chunks of partial[:, q < D * L]; db [D] += of partial[:, D * L + d], in chunk order.
__global__ void patch_embed_param_reduce_kernel(float* __restrict__ dw, float* __restrict__ db,
                                                const float* __restrict__ partial, int n_chunks, int64_t n_w, int D) {
  const int64_t width = n_w + D;
  for (int64_t q = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; q < width; q += int64_t(gridDim.x) * blockDim.x) {
    if (q >= n_w && db == nullptr) continue;
    double acc = 0.0;
    for (int k = 0; k < n_chunks; ++k) acc += partial[k * width + q];
    if (q < n_w) dw[q] += static_cast<float>(acc);
    else db[q - n_w] += static_cast<float>(acc);
  }
}

void check_sizes(const char* op, int B, int N, int n_tok, int P, int L, int D, const int32_t* token_index) {
  require(B >= 0 && N >= 0 && n_tok >= 0 && P > 0 && L > 0 && D > 0, op, ": bad sizes B=", B, " N=", N,
          " n_tok=", n_tok, " P=", P, " L=", L, " D=", D);
  require(N % P == 0, op, ": N=", N, " is not a multiple of the parcel count P=", P);
  require(token_index != nullptr || n_tok == N, op, ": without a token_index n_tok=", n_tok, " must equal N=", N);
}

}  // namespace

void patchify(float* patches, const float* x, int B, int T, int P, int L, cudaStream_t stream) {
  require(B >= 0 && T >= 0 && P > 0 && L > 0, "cuda::patchify: bad sizes B=", B, " T=", T, " P=", P, " L=", L);
  require(T % L == 0, "cuda::patchify: window T=", T, " is not a multiple of patch_len L=", L);
  const int64_t total = int64_t(B) * T * P;
  if (total == 0) return;
  patchify_kernel<<<detail::grid_for(total, 256), 256, 0, stream>>>(patches, x, B, T, P, L);
  detail::check_launch("cuda::patchify");
}

template <typename T>
void patch_embed_forward(T* out, const float* patches, const float* w, const float* b, const float* parcel_embed,
                         const float* time_embed, const int32_t* token_index, int B, int N, int n_tok, int P, int L,
                         int D, cudaStream_t stream) {
  check_sizes("cuda::patch_embed_forward", B, N, n_tok, P, L, D, token_index);
  const size_t shared_bytes = sizeof(float) * kTokens * L;
  require(shared_bytes <= kMaxSharedBytes, "cuda::patch_embed_forward: patch_len L=", L, " is too long");
  const int64_t rows = int64_t(B) * n_tok;
  if (rows == 0) return;
  const int64_t blocks = (rows + kTokens - 1) / kTokens;
  require(blocks <= 0x7fffffff, "cuda::patch_embed_forward: too many rows ", rows);
  patch_embed_forward_kernel<T><<<static_cast<unsigned>(blocks), kForwardBlock, shared_bytes, stream>>>(
      out, patches, w, b, parcel_embed, time_embed, token_index, B, N, n_tok, P, L, D);
  detail::check_launch("cuda::patch_embed_forward");
}

template <typename T>
void patch_embed_backward(float* dw, float* db, float* dparcel_embed, float* dtime_embed, const T* dout,
                          const float* patches, const int32_t* token_index, int B, int N, int n_tok, int P, int L,
                          int D, cudaStream_t stream) {
  check_sizes("cuda::patch_embed_backward", B, N, n_tok, P, L, D, token_index);
  const size_t shared_bytes = sizeof(float) * (kColumnTile * (L + 1) + kRowTile * kColumnTile + kRowTile * L);
  require(shared_bytes <= kMaxSharedBytes, "cuda::patch_embed_backward: patch_len L=", L, " is too long");
  const int64_t rows = int64_t(B) * n_tok;
  if (rows == 0) return;

  // dw, db: chunk partials, then their sum in chunk order. The chunking depends on the shapes alone.
  int64_t n_chunks = std::min(kMaxChunks, (rows + kMinChunkRows - 1) / kMinChunkRows);
  const int64_t chunk_rows = (rows + n_chunks - 1) / n_chunks;
  n_chunks = (rows + chunk_rows - 1) / chunk_rows;
  const int64_t width = int64_t(D) * (L + 1);
  float* partial =
      static_cast<float*>(detail::scratch(sizeof(float) * n_chunks * width, stream, kScratchPartials));
  const dim3 grid((D + kColumnTile - 1) / kColumnTile, static_cast<unsigned>(n_chunks));
  patch_embed_param_partials_kernel<T><<<grid, kBackwardBlock, shared_bytes, stream>>>(
      partial, dout, patches, token_index, N, n_tok, L, D, rows, chunk_rows);
  detail::check_launch("cuda::patch_embed_backward (dw, db partials)");
  patch_embed_param_reduce_kernel<<<detail::grid_for(width, 256), 256, 0, stream>>>(
      dw, db, partial, static_cast<int>(n_chunks), int64_t(D) * L, D);
  detail::check_launch("cuda::patch_embed_backward (dw, db)");

  if (dparcel_embed == nullptr && dtime_embed == nullptr) return;
  int32_t* slot = nullptr;  // null: output row t of sample b is position t
  if (token_index != nullptr) {
    slot = static_cast<int32_t*>(detail::scratch(sizeof(int32_t) * B * size_t(N), stream, kScratchSlots));
    detail::inverse_index(slot, token_index, B, N, n_tok, stream, "cuda::patch_embed_backward (inverse index)");
  }
  detail::embedding_grads<T>(dparcel_embed, dtime_embed, nullptr, dout, slot, nullptr, B, N, n_tok, P, D,
                             kScratchEmbed, stream, "cuda::patch_embed_backward (embeddings)");
}

template void patch_embed_forward<float>(float*, const float*, const float*, const float*, const float*,
                                         const float*, const int32_t*, int, int, int, int, int, int, cudaStream_t);
template void patch_embed_forward<bf16>(bf16*, const float*, const float*, const float*, const float*, const float*,
                                        const int32_t*, int, int, int, int, int, int, cudaStream_t);
template void patch_embed_backward<float>(float*, float*, float*, float*, const float*, const float*,
                                          const int32_t*, int, int, int, int, int, int, cudaStream_t);
template void patch_embed_backward<bf16>(float*, float*, float*, float*, const bf16*, const float*, const int32_t*,
                                         int, int, int, int, int, int, cudaStream_t);

}  // namespace bfm::kernels::cuda
