// Multi-head attention on the GPU, FlashAttention-2 style; kernels/cpu/attention.cpp is its oracle and
// bench/ATTENTION_NOTES.md explains the design, its costs and the numbers.
//
// qkv [B, N, 3D] = [q | k | v] is read in place (row stride 3D), head h in columns h*dh .. (h+1)*dh - 1 of each
// third; out [B, N, D]; lse [B, H, N] (natural log-sum-exp of the scaled scores, for backward). No N x N matrix
// is ever stored: a block of queries meets a stream of key tiles and keeps a running max and sum per row.
// Time-causal mode (causal_block = P > 0): query i sees keys k < key_end(i) = (i / P + 1) * P. Key tiles wholly
// in the future of a query tile are never visited; tiles that straddle a patch boundary are masked elementwise.
//
// Two families of kernels, chosen by the element type:
//   bf16  tensor cores (mma.sync m16n8k16, bf16 in, fp32 accumulate) fed by ldmatrix from shared memory that
//         cp.async fills, double-buffered; softmax statistics in fp32. One warp owns 16 rows of every product,
//         so no product needs a reduction across warps.
//   float the checking mode: plain fp32 FMAs (SIMT), tiles of 32 in shared memory, the same online softmax.
// Backward (both families) is three deterministic passes, no atomics anywhere:
//   1. delta_i = sum_d dO_i * O_i                   [B, H, N] fp32 in scratch
//   2. per KEY tile: dK, dV in registers over every query tile that sees it (scores recomputed from q, k, lse)
//   3. per QUERY tile: dQ in registers over every key tile it sees (the scores recomputed once more)
// Every gradient element has exactly one writer, which adds (+=) its value into dqkv read-modify-write.
//
// The bf16 forward has a Hopper twin (attention_sm90.cu: warpgroup MMA, sm_90a, dh 64 and 128), chosen at run
// time on a device of compute capability 9.0 unless BFM_ATTENTION=mma (attention_sm90.cuh says how);
// attention_forward_variant below dispatches. Backward is the same whichever forward ran.
#include "kernels/attention.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <type_traits>

#include "kernels/cuda/attention_sm90.cuh"
#include "kernels/cuda/attention_sm90_bwd.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ptx.cuh"

namespace bfm::kernels::cuda {
namespace {

using namespace ptx;  // the inline-PTX wrappers (kernels/cuda/ptx.cuh), called by their instruction names

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -__builtin_huge_valf();
constexpr int kScratchDelta = 4;  // detail::scratch slot of backward's delta rows, one of its own

// Query i sees keys [0, key_end(i)); non-decreasing in i, at most N.
__device__ __forceinline__ int key_end(int i, int N, int causal_block) {
  return causal_block > 0 ? min(N, (i / causal_block + 1) * causal_block) : N;
}
// The first query that sees key k (queries before it are in earlier time patches).
__host__ __device__ __forceinline__ int first_query_seeing(int k, int causal_block) {
  return causal_block > 0 ? k / causal_block * causal_block : 0;
}

// Fragment addressing inside a row-major shared tile [rows][ld] of bf16, for the 16x16 block at (row0, col0):
//  - `a` operand (rows of the tile are the rows of a), and the `b` operand of a product whose k runs along the
//    tile's rows (ldmatrix .trans): lanes walk rows 0..15 for columns 0..7, then again for columns 8..15.
//  - `b` operand whose n runs along the tile's rows and k along its columns (ldmatrix, no .trans): lanes walk
//    rows 0..7 for columns 0..7 and 8..15, then rows 8..15; registers {0, 1} are b0, b1 of the n8 tile of rows
//    0..7, registers {2, 3} those of rows 8..15.
template <int kLd>
__device__ __forceinline__ const __nv_bfloat16* frag_a(const __nv_bfloat16* tile, int row0, int col0, int lane) {
  return tile + (row0 + (lane & 7) + ((lane >> 3) & 1) * 8) * kLd + col0 + (lane >> 4) * 8;
}
template <int kLd>
__device__ __forceinline__ const __nv_bfloat16* frag_b(const __nv_bfloat16* tile, int row0, int col0, int lane) {
  return tile + (row0 + (lane & 7) + (lane >> 4) * 8) * kLd + col0 + ((lane >> 3) & 1) * 8;
}

// Rows row0 .. row0 + kRows - 1 of a [N, stride] bf16 matrix (kDh columns from `base`) into the shared tile
// [kRows][kLd]; rows at or past N become zeros, so padded keys and values are finite and contribute nothing.
template <int kRows, int kDh, int kLd, int kThreads>
__device__ __forceinline__ void load_rows_async(__nv_bfloat16* tile, const __nv_bfloat16* base, int64_t stride,
                                                int row0, int N) {
  constexpr int kChunks = kDh / 8;  // 16-byte pieces per row
  static_assert((kRows * kChunks) % kThreads == 0, "every thread copies the same number of pieces");
#pragma unroll
  for (int it = 0; it < kRows * kChunks / kThreads; ++it) {
    const int c = it * kThreads + threadIdx.x;
    const int r = c / kChunks, col = c % kChunks * 8;
    const int row = row0 + r;
    const bool valid = row < N;
    cp_async_16(tile + r * kLd + col, base + (valid ? row : 0) * stride + col, valid);
  }
}
// kRows floats from src[row0 ..] into dst, zeros at and past N.
template <int kRows, int kThreads>
__device__ __forceinline__ void load_floats_async(float* dst, const float* src, int row0, int N) {
  for (int r = threadIdx.x; r < kRows; r += kThreads) {
    const bool valid = row0 + r < N;
    cp_async_4(dst + r, src + (valid ? row0 + r : 0), valid);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// bf16 forward. A block owns kBlockM = 16 * kWarps queries of one head; warp w owns rows 16w .. 16w+15 and keeps
// its 16 x dh output accumulator, row max and row sum in registers. Shared memory (bf16, rows padded by 8 elements
// so that the 8 row addresses of every ldmatrix fall in distinct banks):
//   q [kBlockM][kLd], k [2][kBlockN][kLd], v [2][kBlockN][kLd]   (key tiles double-buffered by cp.async)
template <int kDh>
struct ForwardTile {
  static constexpr int kWarps = 8;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockM = 16 * kWarps;
  static constexpr int kBlockN = 64;
  static constexpr int kLd = kDh + 8;
  // dh 64 and 128 re-read their q fragments from shared memory for every key tile (a fifth more ldmatrix) rather
  // than keep 16 or 32 more registers live: dh 64 then fits 128 registers, two blocks per SM, without spilling.
  static constexpr bool kQInRegisters = kDh <= 32;
  static constexpr size_t kSmemBytes = size_t(kBlockM + 4 * kBlockN) * kLd * sizeof(__nv_bfloat16);
  // Two blocks per SM (16 warps) where the registers allow it without spilling (at most 128 per thread; dh 128
  // needs about 196).
  static constexpr int kMinBlocks = kDh <= 64 ? 2 : 1;
};

template <int kDh>
__global__ void __launch_bounds__(ForwardTile<kDh>::kThreads, ForwardTile<kDh>::kMinBlocks)
    attention_forward_mma_kernel(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int N, int H,
                                 int causal_block, float scale_log2) {
  using Tile = ForwardTile<kDh>;
  constexpr int kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN, kLd = Tile::kLd, kThreads = Tile::kThreads;
  constexpr int kKeyFrags = kBlockN / 8, kDhFrags = kDh / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* q_tile = reinterpret_cast<__nv_bfloat16*>(smem);
  __nv_bfloat16* k_tiles = q_tile + kBlockM * kLd;
  __nv_bfloat16* v_tiles = k_tiles + 2 * kBlockN * kLd;

  const int bh = blockIdx.x, b = bh / H, h = bh % H;
  const int r0 = (gridDim.y - 1 - blockIdx.y) * kBlockM;  // the longest (latest) query tiles start first
  const int D = H * kDh;
  const int64_t stride = 3 * int64_t(D);
  const __nv_bfloat16* q_base = qkv + int64_t(b) * N * stride + h * kDh;
  const __nv_bfloat16* k_base = q_base + D;
  const __nv_bfloat16* v_base = q_base + 2 * D;

  // Keys the tile's last row sees (no key tile at or past it is visited), and keys its first row sees (key tiles
  // wholly below that need no mask).
  const int tile_key_end = key_end(min(r0 + kBlockM, N) - 1, N, causal_block);
  const int shared_key_end = key_end(r0, N, causal_block);
  const int n_key_tiles = (tile_key_end + kBlockN - 1) / kBlockN;

  load_rows_async<kBlockM, kDh, kLd, kThreads>(q_tile, q_base, stride, r0, N);
  load_rows_async<kBlockN, kDh, kLd, kThreads>(k_tiles, k_base, stride, 0, N);
  load_rows_async<kBlockN, kDh, kLd, kThreads>(v_tiles, v_base, stride, 0, N);
  cp_async_commit();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int row0 = warp * 16;                                   // this warp's rows in the tile
  const int rows[2] = {r0 + row0 + g, r0 + row0 + g + 8};       // the two query rows this thread holds
  const int row_key_end[2] = {key_end(rows[0], N, causal_block), key_end(rows[1], N, causal_block)};

  float acc[kDhFrags][4];
#pragma unroll
  for (int i = 0; i < kDhFrags; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;
  // Running max (of the scores times scale * log2 e, so that exp2 gives the softmax) and this thread's part of
  // the running sum, for rows g and g + 8.
  float row_max[2] = {kNegInf, kNegInf}, row_sum[2] = {0.0f, 0.0f};
  uint32_t q_frag[Tile::kQInRegisters ? kDh / 16 : 1][4];

  for (int j = 0; j < n_key_tiles; ++j) {
    // Prefetch the next key tile into the other buffer (last read in iteration j - 1, released by its closing
    // barrier), then wait for this one. A group is committed every iteration, empty or not, so that
    // wait_group 1 always means "everything but the newest prefetch has landed".
    if (j + 1 < n_key_tiles) {
      const int next = (j + 1) & 1;
      load_rows_async<kBlockN, kDh, kLd, kThreads>(k_tiles + next * kBlockN * kLd, k_base, stride,
                                                   (j + 1) * kBlockN, N);
      load_rows_async<kBlockN, kDh, kLd, kThreads>(v_tiles + next * kBlockN * kLd, v_base, stride,
                                                   (j + 1) * kBlockN, N);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const __nv_bfloat16* k_tile = k_tiles + (j & 1) * kBlockN * kLd;
    const __nv_bfloat16* v_tile = v_tiles + (j & 1) * kBlockN * kLd;
    if constexpr (Tile::kQInRegisters) {
      if (j == 0) {
#pragma unroll
        for (int kk = 0; kk < kDh / 16; ++kk) ldmatrix_x4(q_frag[kk], frag_a<kLd>(q_tile, row0, kk * 16, lane));
      }
    }

    // S [16 x kBlockN] = q k^T for this warp's rows (unscaled).
    float s[kKeyFrags][4];
#pragma unroll
    for (int i = 0; i < kKeyFrags; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kDh / 16; ++kk) {
      uint32_t a[4];
      if constexpr (Tile::kQInRegisters) {
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = q_frag[kk][i];
      } else {
        ldmatrix_x4(a, frag_a<kLd>(q_tile, row0, kk * 16, lane));
      }
#pragma unroll
      for (int nn = 0; nn < kBlockN / 16; ++nn) {
        uint32_t kb[4];
        ldmatrix_x4(kb, frag_b<kLd>(k_tile, nn * 16, kk * 16, lane));
        mma_bf16_16x8x16(s[2 * nn], a, kb[0], kb[1]);
        mma_bf16_16x8x16(s[2 * nn + 1], a, kb[2], kb[3]);
      }
    }

    // Keys past a row's key_end (future patches, or past N: zero rows in shared memory) get probability 0.
    const int c0 = j * kBlockN;
    if (c0 + kBlockN > shared_key_end) {
#pragma unroll
      for (int i = 0; i < kKeyFrags; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (c0 + i * 8 + 2 * t + (e & 1) >= row_key_end[e >> 1]) s[i][e] = kNegInf;
    }

    // Online softmax (as on the CPU): the new block raises the row max to m'; what was accumulated relative to m
    // is rescaled by alpha = 2^(m - m'). The max is reduced over the 4 threads that share a row (lanes 4g .. 4g+3);
    // the sum stays per thread until the end. A row with every key so far masked keeps m = -inf, and measures
    // its exponents from 0 instead, so that no -inf - -inf appears.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = kNegInf;
#pragma unroll
      for (int i = 0; i < kKeyFrags; ++i) mx = fmaxf(mx, fmaxf(s[i][2 * r], s[i][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(row_max[r], mx * scale_log2);
      const float m_use = m_new == kNegInf ? 0.0f : m_new;
      const float alpha = exp2f(row_max[r] - m_use);
      row_max[r] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int i = 0; i < kKeyFrags; ++i)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float p = exp2f(fmaf(s[i][2 * r + e], scale_log2, -m_use));
          s[i][2 * r + e] = p;
          sum += p;
        }
      row_sum[r] = row_sum[r] * alpha + sum;
#pragma unroll
      for (int i = 0; i < kDhFrags; ++i) {
        acc[i][2 * r] *= alpha;
        acc[i][2 * r + 1] *= alpha;
      }
    }

    // acc [16 x dh] += P [16 x kBlockN] v [kBlockN x dh]; P (rounded to bf16) straight from the S registers.
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      const uint32_t a[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                             pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                             pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dd = 0; dd < kDh / 16; ++dd) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, frag_a<kLd>(v_tile, kk * 16, dd * 16, lane));
        mma_bf16_16x8x16(acc[2 * dd], a, vb[0], vb[1]);
        mma_bf16_16x8x16(acc[2 * dd + 1], a, vb[2], vb[3]);
      }
    }
    __syncthreads();  // every warp is done with buffer j & 1 before iteration j + 1 refills it
  }

  // out = acc / l, lse = m + ln l (in natural units). Every real row saw key 0, so l > 0.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = row_sum[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    if (rows[r] >= N) continue;
    const float inv_l = 1.0f / l;
    __nv_bfloat16* o = out + (int64_t(b) * N + rows[r]) * D + h * kDh + 2 * t;
#pragma unroll
    for (int i = 0; i < kDhFrags; ++i)
      *reinterpret_cast<uint32_t*>(o + i * 8) = pack_bf16(acc[i][2 * r] * inv_l, acc[i][2 * r + 1] * inv_l);
    if (t == 0) lse[int64_t(bh) * N + rows[r]] = (row_max[r] + log2f(l)) * kLn2;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Backward pass 1 (both element types): delta [B, H, N] = rowsum(dO * O) per head, one warp per row, fp32.
template <typename T>
__global__ void attention_delta_kernel(float* delta, const T* dout, const T* out, int B, int N, int H, int dh) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);  // = (b * H + h) * N + i
  if (row >= int64_t(B) * H * N) return;
  const int i = int(row % N);
  const int64_t bh = row / N;
  const int b = int(bh / H), h = int(bh % H);
  const int64_t off = (int64_t(b) * N + i) * H * dh + int64_t(h) * dh;
  float sum = 0.0f;
  for (int d = lane; d < dh; d += 32) sum += detail::to_float(dout[off + d]) * detail::to_float(out[off + d]);
  sum = detail::warp_sum(sum);
  if (lane == 0) delta[row] = sum;
}

// ---------------------------------------------------------------------------------------------------------------
// bf16 backward. Notation of the CPU twin: P = exp(S * scale - lse), dV = P^T dO, dP = dO V^T,
// dS = P * (dP - delta), dQ = dS K * scale, dK = dS^T Q * scale.
//
// Pass 2, per key tile. A block owns kBlockKeys = 16 * kWarps keys of one head; warp w owns keys 16w .. 16w+15
// and their dK, dV [16 x dh] in registers. It computes the TRANSPOSED blocks S^T = K Q^T and dP^T = V dO^T, so
// that the keys are the rows (the `a` side) and P^T and dS^T feed the dV and dK products straight from registers.
// Query tiles stream through shared memory, double-buffered:
//   k, v [kBlockKeys][kLd] once; q, dO [2][kBlockQ][kLd], lse, delta [2][kBlockQ] fp32
template <int kDh>
struct BackwardTile {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockKeys = 16 * kWarps;  // pass 2: keys per block; pass 3: queries per block
  // Pass 2: queries per streamed tile; pass 3: keys per streamed tile. dh 128 keeps two 16 x dh accumulators
  // (dK, dV) live, so its streamed tiles are halved to keep S and dP within the register budget.
  static constexpr int kBlockStream = kDh <= 64 ? 64 : 32;
  static constexpr int kLd = kDh + 8;
  static constexpr size_t kSmemBytes =
      size_t(2 * kBlockKeys + 4 * kBlockStream) * kLd * sizeof(__nv_bfloat16) + 4 * kBlockStream * sizeof(float);
};

template <int kDh>
__global__ void __launch_bounds__(BackwardTile<kDh>::kThreads)
    attention_backward_dkdv_mma_kernel(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv,
                                       const float* lse, const float* delta, int N, int H, int causal_block,
                                       float scale, float scale_log2) {
  using Tile = BackwardTile<kDh>;
  constexpr int kBlockKeys = Tile::kBlockKeys, kBlockQ = Tile::kBlockStream, kLd = Tile::kLd;
  constexpr int kThreads = Tile::kThreads, kQueryFrags = kBlockQ / 8, kDhFrags = kDh / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* k_tile = reinterpret_cast<__nv_bfloat16*>(smem);
  __nv_bfloat16* v_tile = k_tile + kBlockKeys * kLd;
  __nv_bfloat16* q_tiles = v_tile + kBlockKeys * kLd;   // [2][kBlockQ][kLd]
  __nv_bfloat16* do_tiles = q_tiles + 2 * kBlockQ * kLd;  // [2][kBlockQ][kLd]
  float* lse_tiles = reinterpret_cast<float*>(do_tiles + 2 * kBlockQ * kLd);  // [2][kBlockQ]
  float* delta_tiles = lse_tiles + 2 * kBlockQ;                                // [2][kBlockQ]

  const int bh = blockIdx.x, b = bh / H, h = bh % H;
  const int c0 = blockIdx.y * kBlockKeys;  // the earliest (longest) key tiles start first
  const int D = H * kDh;
  const int64_t stride = 3 * int64_t(D);
  const __nv_bfloat16* q_base = qkv + int64_t(b) * N * stride + h * kDh;
  const __nv_bfloat16* do_base = dout + int64_t(b) * N * D + h * kDh;
  const float* lse_head = lse + int64_t(bh) * N;
  const float* delta_head = delta + int64_t(bh) * N;

  // Query tiles wholly before the first patch that sees key c0 are skipped.
  const int first_tile = first_query_seeing(c0, causal_block) / kBlockQ;
  const int n_tiles = (N + kBlockQ - 1) / kBlockQ;

  load_rows_async<kBlockKeys, kDh, kLd, kThreads>(k_tile, q_base + D, stride, c0, N);
  load_rows_async<kBlockKeys, kDh, kLd, kThreads>(v_tile, q_base + 2 * D, stride, c0, N);
  const auto load_queries = [&](int tile, int buf) {
    const int q0 = tile * kBlockQ;
    load_rows_async<kBlockQ, kDh, kLd, kThreads>(q_tiles + buf * kBlockQ * kLd, q_base, stride, q0, N);
    load_rows_async<kBlockQ, kDh, kLd, kThreads>(do_tiles + buf * kBlockQ * kLd, do_base, D, q0, N);
    load_floats_async<kBlockQ, kThreads>(lse_tiles + buf * kBlockQ, lse_head, q0, N);
    load_floats_async<kBlockQ, kThreads>(delta_tiles + buf * kBlockQ, delta_head, q0, N);
  };
  load_queries(first_tile, 0);
  cp_async_commit();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int key0 = warp * 16;  // this warp's keys in the tile
  const int keys[2] = {c0 + key0 + g, c0 + key0 + g + 8};

  float dk[kDhFrags][4], dv[kDhFrags][4];
#pragma unroll
  for (int i = 0; i < kDhFrags; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[i][e] = dv[i][e] = 0.0f;

  for (int tile = first_tile; tile < n_tiles; ++tile) {
    const int buf = (tile - first_tile) & 1;
    if (tile + 1 < n_tiles) load_queries(tile + 1, buf ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const __nv_bfloat16* q_tile = q_tiles + buf * kBlockQ * kLd;
    const __nv_bfloat16* do_tile = do_tiles + buf * kBlockQ * kLd;
    const float* lse_tile = lse_tiles + buf * kBlockQ;
    const float* delta_tile = delta_tiles + buf * kBlockQ;
    const int q0 = tile * kBlockQ;

    // S^T [16 keys x kBlockQ queries] = k q^T.
    float st[kQueryFrags][4];
#pragma unroll
    for (int i = 0; i < kQueryFrags; ++i) st[i][0] = st[i][1] = st[i][2] = st[i][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kDh / 16; ++kk) {
      uint32_t a[4];
      ldmatrix_x4(a, frag_a<kLd>(k_tile, key0, kk * 16, lane));
#pragma unroll
      for (int nn = 0; nn < kBlockQ / 16; ++nn) {
        uint32_t qb[4];
        ldmatrix_x4(qb, frag_b<kLd>(q_tile, nn * 16, kk * 16, lane));
        mma_bf16_16x8x16(st[2 * nn], a, qb[0], qb[1]);
        mma_bf16_16x8x16(st[2 * nn + 1], a, qb[2], qb[3]);
      }
    }
    // P^T = exp(S^T * scale - lse_query). Entry e of fragment i: key keys[e >> 1], query q0 + 8i + 2t + (e & 1).
    // Masked: queries past N (zero rows, lse 0) and keys a query does not see (future patches, keys past N).
    // The first query of the tile has the smallest key_end, so tiles it sees whole need no mask.
    const bool masked = q0 + kBlockQ > N || c0 + kBlockKeys > key_end(q0, N, causal_block);
#pragma unroll
    for (int i = 0; i < kQueryFrags; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qi = i * 8 + 2 * t + (e & 1);
        const float p = exp2f(fmaf(st[i][e], scale_log2, -lse_tile[qi] * kLog2e));
        const int query = q0 + qi;
        st[i][e] = !masked || (query < N && keys[e >> 1] < key_end(query, N, causal_block)) ? p : 0.0f;
      }

    // dV [16 x dh] += P^T [16 x kBlockQ] dO [kBlockQ x dh].
#pragma unroll
    for (int kk = 0; kk < kBlockQ / 16; ++kk) {
      const uint32_t a[4] = {pack_bf16(st[2 * kk][0], st[2 * kk][1]), pack_bf16(st[2 * kk][2], st[2 * kk][3]),
                             pack_bf16(st[2 * kk + 1][0], st[2 * kk + 1][1]),
                             pack_bf16(st[2 * kk + 1][2], st[2 * kk + 1][3])};
#pragma unroll
      for (int dd = 0; dd < kDh / 16; ++dd) {
        uint32_t ob[4];
        ldmatrix_x4_trans(ob, frag_a<kLd>(do_tile, kk * 16, dd * 16, lane));
        mma_bf16_16x8x16(dv[2 * dd], a, ob[0], ob[1]);
        mma_bf16_16x8x16(dv[2 * dd + 1], a, ob[2], ob[3]);
      }
    }

    // dP^T [16 x kBlockQ] = v dO^T, then dS^T = P^T * (dP^T - delta_query) in place.
    float dst[kQueryFrags][4];
#pragma unroll
    for (int i = 0; i < kQueryFrags; ++i) dst[i][0] = dst[i][1] = dst[i][2] = dst[i][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kDh / 16; ++kk) {
      uint32_t a[4];
      ldmatrix_x4(a, frag_a<kLd>(v_tile, key0, kk * 16, lane));
#pragma unroll
      for (int nn = 0; nn < kBlockQ / 16; ++nn) {
        uint32_t ob[4];
        ldmatrix_x4(ob, frag_b<kLd>(do_tile, nn * 16, kk * 16, lane));
        mma_bf16_16x8x16(dst[2 * nn], a, ob[0], ob[1]);
        mma_bf16_16x8x16(dst[2 * nn + 1], a, ob[2], ob[3]);
      }
    }
#pragma unroll
    for (int i = 0; i < kQueryFrags; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) dst[i][e] = st[i][e] * (dst[i][e] - delta_tile[i * 8 + 2 * t + (e & 1)]);

    // dK [16 x dh] += dS^T [16 x kBlockQ] q [kBlockQ x dh]   (times scale at the end).
#pragma unroll
    for (int kk = 0; kk < kBlockQ / 16; ++kk) {
      const uint32_t a[4] = {pack_bf16(dst[2 * kk][0], dst[2 * kk][1]), pack_bf16(dst[2 * kk][2], dst[2 * kk][3]),
                             pack_bf16(dst[2 * kk + 1][0], dst[2 * kk + 1][1]),
                             pack_bf16(dst[2 * kk + 1][2], dst[2 * kk + 1][3])};
#pragma unroll
      for (int dd = 0; dd < kDh / 16; ++dd) {
        uint32_t qb[4];
        ldmatrix_x4_trans(qb, frag_a<kLd>(q_tile, kk * 16, dd * 16, lane));
        mma_bf16_16x8x16(dk[2 * dd], a, qb[0], qb[1]);
        mma_bf16_16x8x16(dk[2 * dd + 1], a, qb[2], qb[3]);
      }
    }
    __syncthreads();  // buffer `buf` is refilled by the next iteration's prefetch
  }

  // dqkv (k and v thirds) += dK * scale, dV: this thread is the only writer of these elements.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (keys[r] >= N) continue;
    __nv_bfloat16* gk = dqkv + (int64_t(b) * N + keys[r]) * stride + D + h * kDh + 2 * t;
    __nv_bfloat16* gv = gk + D;
#pragma unroll
    for (int i = 0; i < kDhFrags; ++i) {
      uint32_t* pk = reinterpret_cast<uint32_t*>(gk + i * 8);
      uint32_t* pv = reinterpret_cast<uint32_t*>(gv + i * 8);
      const float2 k_old = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(pk));
      const float2 v_old = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(pv));
      *pk = pack_bf16(k_old.x + dk[i][2 * r] * scale, k_old.y + dk[i][2 * r + 1] * scale);
      *pv = pack_bf16(v_old.x + dv[i][2 * r], v_old.y + dv[i][2 * r + 1]);
    }
  }
}

// Pass 3, per query tile: a block owns kBlockKeys (= 16 * kWarps) queries, warp w rows 16w .. 16w+15 and their
// dQ [16 x dh] in registers; key tiles of kBlockStream stream through shared memory, double-buffered:
//   q, dO [kBlockKeys][kLd] once; k, v [2][kBlockStream][kLd]
template <int kDh>
__global__ void __launch_bounds__(BackwardTile<kDh>::kThreads)
    attention_backward_dq_mma_kernel(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv,
                                     const float* lse, const float* delta, int N, int H, int causal_block,
                                     float scale, float scale_log2) {
  using Tile = BackwardTile<kDh>;
  constexpr int kBlockM = Tile::kBlockKeys, kBlockN = Tile::kBlockStream, kLd = Tile::kLd;
  constexpr int kThreads = Tile::kThreads, kKeyFrags = kBlockN / 8, kDhFrags = kDh / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* q_tile = reinterpret_cast<__nv_bfloat16*>(smem);
  __nv_bfloat16* do_tile = q_tile + kBlockM * kLd;
  __nv_bfloat16* k_tiles = do_tile + kBlockM * kLd;   // [2][kBlockN][kLd]
  __nv_bfloat16* v_tiles = k_tiles + 2 * kBlockN * kLd;  // [2][kBlockN][kLd]

  const int bh = blockIdx.x, b = bh / H, h = bh % H;
  const int r0 = (gridDim.y - 1 - blockIdx.y) * kBlockM;  // the longest (latest) query tiles start first
  const int D = H * kDh;
  const int64_t stride = 3 * int64_t(D);
  const __nv_bfloat16* q_base = qkv + int64_t(b) * N * stride + h * kDh;
  const __nv_bfloat16* k_base = q_base + D;
  const __nv_bfloat16* v_base = q_base + 2 * D;

  const int tile_key_end = key_end(min(r0 + kBlockM, N) - 1, N, causal_block);
  const int shared_key_end = key_end(r0, N, causal_block);
  const int n_key_tiles = (tile_key_end + kBlockN - 1) / kBlockN;

  load_rows_async<kBlockM, kDh, kLd, kThreads>(q_tile, q_base, stride, r0, N);
  load_rows_async<kBlockM, kDh, kLd, kThreads>(do_tile, dout + int64_t(b) * N * D + h * kDh, D, r0, N);
  load_rows_async<kBlockN, kDh, kLd, kThreads>(k_tiles, k_base, stride, 0, N);
  load_rows_async<kBlockN, kDh, kLd, kThreads>(v_tiles, v_base, stride, 0, N);
  cp_async_commit();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int row0 = warp * 16;
  const int rows[2] = {r0 + row0 + g, r0 + row0 + g + 8};
  const int row_key_end[2] = {key_end(rows[0], N, causal_block), key_end(rows[1], N, causal_block)};
  // Rows past N: lse and delta 0, q and dO zero rows; their dQ is computed but never written.
  float row_lse2[2], row_delta[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row_lse2[r] = rows[r] < N ? lse[int64_t(bh) * N + rows[r]] * kLog2e : 0.0f;
    row_delta[r] = rows[r] < N ? delta[int64_t(bh) * N + rows[r]] : 0.0f;
  }

  float dq[kDhFrags][4];
#pragma unroll
  for (int i = 0; i < kDhFrags; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.0f;

  for (int j = 0; j < n_key_tiles; ++j) {
    if (j + 1 < n_key_tiles) {
      const int next = (j + 1) & 1;
      load_rows_async<kBlockN, kDh, kLd, kThreads>(k_tiles + next * kBlockN * kLd, k_base, stride,
                                                   (j + 1) * kBlockN, N);
      load_rows_async<kBlockN, kDh, kLd, kThreads>(v_tiles + next * kBlockN * kLd, v_base, stride,
                                                   (j + 1) * kBlockN, N);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const __nv_bfloat16* k_tile = k_tiles + (j & 1) * kBlockN * kLd;
    const __nv_bfloat16* v_tile = v_tiles + (j & 1) * kBlockN * kLd;
    const int c0 = j * kBlockN;

    // S [16 x kBlockN] = q k^T and dP [16 x kBlockN] = dO v^T.
    float s[kKeyFrags][4], dp[kKeyFrags][4];
#pragma unroll
    for (int i = 0; i < kKeyFrags; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[i][e] = dp[i][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kDh / 16; ++kk) {
      uint32_t qa[4], oa[4];
      ldmatrix_x4(qa, frag_a<kLd>(q_tile, row0, kk * 16, lane));
      ldmatrix_x4(oa, frag_a<kLd>(do_tile, row0, kk * 16, lane));
#pragma unroll
      for (int nn = 0; nn < kBlockN / 16; ++nn) {
        uint32_t kb[4], vb[4];
        ldmatrix_x4(kb, frag_b<kLd>(k_tile, nn * 16, kk * 16, lane));
        ldmatrix_x4(vb, frag_b<kLd>(v_tile, nn * 16, kk * 16, lane));
        mma_bf16_16x8x16(s[2 * nn], qa, kb[0], kb[1]);
        mma_bf16_16x8x16(s[2 * nn + 1], qa, kb[2], kb[3]);
        mma_bf16_16x8x16(dp[2 * nn], oa, vb[0], vb[1]);
        mma_bf16_16x8x16(dp[2 * nn + 1], oa, vb[2], vb[3]);
      }
    }
    // dS = P * (dP - delta) with P = exp(S * scale - lse); masked keys (future patches, past N) give 0.
    const bool masked = c0 + kBlockN > shared_key_end;
#pragma unroll
    for (int i = 0; i < kKeyFrags; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        const float p = exp2f(fmaf(s[i][e], scale_log2, -row_lse2[r]));
        const bool visible = !masked || c0 + i * 8 + 2 * t + (e & 1) < row_key_end[r];
        dp[i][e] = visible ? p * (dp[i][e] - row_delta[r]) : 0.0f;
      }

    // dQ [16 x dh] += dS [16 x kBlockN] k [kBlockN x dh]   (times scale at the end).
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      const uint32_t a[4] = {pack_bf16(dp[2 * kk][0], dp[2 * kk][1]), pack_bf16(dp[2 * kk][2], dp[2 * kk][3]),
                             pack_bf16(dp[2 * kk + 1][0], dp[2 * kk + 1][1]),
                             pack_bf16(dp[2 * kk + 1][2], dp[2 * kk + 1][3])};
#pragma unroll
      for (int dd = 0; dd < kDh / 16; ++dd) {
        uint32_t kb[4];
        ldmatrix_x4_trans(kb, frag_a<kLd>(k_tile, kk * 16, dd * 16, lane));
        mma_bf16_16x8x16(dq[2 * dd], a, kb[0], kb[1]);
        mma_bf16_16x8x16(dq[2 * dd + 1], a, kb[2], kb[3]);
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (rows[r] >= N) continue;
    __nv_bfloat16* gq = dqkv + (int64_t(b) * N + rows[r]) * stride + h * kDh + 2 * t;
#pragma unroll
    for (int i = 0; i < kDhFrags; ++i) {
      uint32_t* pq = reinterpret_cast<uint32_t*>(gq + i * 8);
      const float2 old = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(pq));
      *pq = pack_bf16(old.x + dq[i][2 * r] * scale, old.y + dq[i][2 * r + 1] * scale);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// float (checking mode): SIMT kernels on tiles of 32 rows. A block of 8 warps owns 32 rows (queries, or keys in
// the dK/dV pass), 4 per warp. A lane stands for one key (or query) of the streamed tile while scores are formed
// (dot products over dh read from a shared row padded to dh + 1 floats, so lanes hit distinct banks), and for
// dh / 32 output columns while P v, dS k, ... accumulate; values move between the two roles by warp shuffles in a
// fixed order, so results repeat bit for bit.
constexpr int kSimtRows = 32;
constexpr int kSimtWarps = 8;
constexpr int kSimtThreads = 32 * kSimtWarps;
constexpr int kSimtRowsPerWarp = kSimtRows / kSimtWarps;

// Rows row0 .. row0 + 31 of a [N, stride] float matrix into shared [32][ld], zeros at and past N.
template <int kDh>
__device__ __forceinline__ void load_rows_simt(float* tile, int ld, const float* base, int64_t stride, int row0,
                                               int N) {
  for (int c = threadIdx.x; c < kSimtRows * kDh; c += kSimtThreads) {
    const int r = c / kDh, d = c % kDh;
    tile[r * ld + d] = row0 + r < N ? base[int64_t(row0 + r) * stride + d] : 0.0f;
  }
}

template <int kDh>
__device__ __forceinline__ float dot_rows(const float* a, const float* b) {
  float s = 0.0f;
#pragma unroll 16
  for (int d = 0; d < kDh; ++d) s = fmaf(a[d], b[d], s);
  return s;
}

// Shared: q [32][kDh], k [32][kDh + 1], v [32][kDh].
template <int kDh>
__global__ void __launch_bounds__(kSimtThreads)
    attention_forward_simt_kernel(float* out, float* lse, const float* qkv, int N, int H, int causal_block,
                                  float scale) {
  constexpr int kCols = kDh / 32;
  extern __shared__ __align__(16) unsigned char smem[];
  float* q_tile = reinterpret_cast<float*>(smem);
  float* k_tile = q_tile + kSimtRows * kDh;
  float* v_tile = k_tile + kSimtRows * (kDh + 1);

  const int bh = blockIdx.x, b = bh / H, h = bh % H;
  const int r0 = (gridDim.y - 1 - blockIdx.y) * kSimtRows;
  const int D = H * kDh;
  const int64_t stride = 3 * int64_t(D);
  const float* q_base = qkv + int64_t(b) * N * stride + h * kDh;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int tile_key_end = key_end(min(r0 + kSimtRows, N) - 1, N, causal_block);

  load_rows_simt<kDh>(q_tile, kDh, q_base, stride, r0, N);
  float acc[kSimtRowsPerWarp][kCols] = {};
  float row_max[kSimtRowsPerWarp], row_sum[kSimtRowsPerWarp] = {};
#pragma unroll
  for (int rr = 0; rr < kSimtRowsPerWarp; ++rr) row_max[rr] = kNegInf;

  for (int c0 = 0; c0 < tile_key_end; c0 += kSimtRows) {
    __syncthreads();  // the previous tile is consumed
    load_rows_simt<kDh>(k_tile, kDh + 1, q_base + D, stride, c0, N);
    load_rows_simt<kDh>(v_tile, kDh, q_base + 2 * D, stride, c0, N);
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < kSimtRowsPerWarp; ++rr) {
      const int lr = warp * kSimtRowsPerWarp + rr, row = r0 + lr;
      if (row >= N) continue;  // warp-uniform
      const float s_raw = dot_rows<kDh>(q_tile + lr * kDh, k_tile + lane * (kDh + 1)) * scale;
      const float s = c0 + lane < key_end(row, N, causal_block) ? s_raw : kNegInf;
      const float m_new = fmaxf(row_max[rr], detail::warp_max(s));
      const float m_use = m_new == kNegInf ? 0.0f : m_new;
      const float alpha = expf(row_max[rr] - m_use);
      const float p = expf(s - m_use);
      row_sum[rr] = row_sum[rr] * alpha + detail::warp_sum(p);
      row_max[rr] = m_new;
#pragma unroll
      for (int c = 0; c < kCols; ++c) acc[rr][c] *= alpha;
      for (int k = 0; k < kSimtRows; ++k) {
        const float pk = __shfl_sync(0xffffffffu, p, k);
#pragma unroll
        for (int c = 0; c < kCols; ++c) acc[rr][c] = fmaf(pk, v_tile[k * kDh + lane + 32 * c], acc[rr][c]);
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < kSimtRowsPerWarp; ++rr) {
    const int row = r0 + warp * kSimtRowsPerWarp + rr;
    if (row >= N) continue;
    float* o = out + (int64_t(b) * N + row) * D + h * kDh;
#pragma unroll
    for (int c = 0; c < kCols; ++c) o[lane + 32 * c] = acc[rr][c] / row_sum[rr];
    if (lane == 0) lse[int64_t(bh) * N + row] = row_max[rr] + logf(row_sum[rr]);
  }
}

// dK, dV of 32 keys (4 per warp) over the query tiles that see them. Shared: k, v [32][kDh] (read by broadcast),
// q, dO [32][kDh + 1] (a lane per query), lse, delta [32].
template <int kDh>
__global__ void __launch_bounds__(kSimtThreads)
    attention_backward_dkdv_simt_kernel(float* dqkv, const float* dout, const float* qkv, const float* lse,
                                        const float* delta, int N, int H, int causal_block, float scale) {
  constexpr int kCols = kDh / 32;
  extern __shared__ __align__(16) unsigned char smem[];
  float* k_tile = reinterpret_cast<float*>(smem);
  float* v_tile = k_tile + kSimtRows * kDh;
  float* q_tile = v_tile + kSimtRows * kDh;
  float* do_tile = q_tile + kSimtRows * (kDh + 1);
  float* lse_tile = do_tile + kSimtRows * (kDh + 1);
  float* delta_tile = lse_tile + kSimtRows;

  const int bh = blockIdx.x, b = bh / H, h = bh % H;
  const int c0 = blockIdx.y * kSimtRows;
  const int D = H * kDh;
  const int64_t stride = 3 * int64_t(D);
  const float* q_base = qkv + int64_t(b) * N * stride + h * kDh;
  const float* do_base = dout + int64_t(b) * N * D + h * kDh;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  load_rows_simt<kDh>(k_tile, kDh, q_base + D, stride, c0, N);
  load_rows_simt<kDh>(v_tile, kDh, q_base + 2 * D, stride, c0, N);
  float dk[kSimtRowsPerWarp][kCols] = {}, dv[kSimtRowsPerWarp][kCols] = {};

  for (int q0 = first_query_seeing(c0, causal_block) / kSimtRows * kSimtRows; q0 < N; q0 += kSimtRows) {
    __syncthreads();
    load_rows_simt<kDh>(q_tile, kDh + 1, q_base, stride, q0, N);
    load_rows_simt<kDh>(do_tile, kDh + 1, do_base, D, q0, N);
    if (const int r = threadIdx.x; r < kSimtRows) {
      const bool valid = q0 + r < N;
      lse_tile[r] = valid ? lse[int64_t(bh) * N + q0 + r] : 0.0f;
      delta_tile[r] = valid ? delta[int64_t(bh) * N + q0 + r] : 0.0f;
    }
    __syncthreads();
    const int query = q0 + lane;
#pragma unroll
    for (int kk = 0; kk < kSimtRowsPerWarp; ++kk) {
      const int lk = warp * kSimtRowsPerWarp + kk, key = c0 + lk;
      if (key >= N) continue;  // warp-uniform
      const float s = dot_rows<kDh>(q_tile + lane * (kDh + 1), k_tile + lk * kDh) * scale;
      const bool visible = query < N && key < key_end(query, N, causal_block);
      const float p = visible ? expf(s - lse_tile[lane]) : 0.0f;
      const float dp = dot_rows<kDh>(do_tile + lane * (kDh + 1), v_tile + lk * kDh);
      const float ds = p * (dp - delta_tile[lane]);
      for (int qq = 0; qq < kSimtRows; ++qq) {
        const float pq = __shfl_sync(0xffffffffu, p, qq);
        const float dsq = __shfl_sync(0xffffffffu, ds, qq);
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
          dv[kk][c] = fmaf(pq, do_tile[qq * (kDh + 1) + lane + 32 * c], dv[kk][c]);
          dk[kk][c] = fmaf(dsq, q_tile[qq * (kDh + 1) + lane + 32 * c], dk[kk][c]);
        }
      }
    }
  }
#pragma unroll
  for (int kk = 0; kk < kSimtRowsPerWarp; ++kk) {
    const int key = c0 + warp * kSimtRowsPerWarp + kk;
    if (key >= N) continue;
    float* g = dqkv + (int64_t(b) * N + key) * stride + D + h * kDh;
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      g[lane + 32 * c] += dk[kk][c] * scale;
      g[D + lane + 32 * c] += dv[kk][c];
    }
  }
}

// dQ of 32 queries (4 per warp) over the key tiles they see. Shared: q, dO [32][kDh] (broadcast),
// k, v [32][kDh + 1] (a lane per key).
template <int kDh>
__global__ void __launch_bounds__(kSimtThreads)
    attention_backward_dq_simt_kernel(float* dqkv, const float* dout, const float* qkv, const float* lse,
                                      const float* delta, int N, int H, int causal_block, float scale) {
  constexpr int kCols = kDh / 32;
  extern __shared__ __align__(16) unsigned char smem[];
  float* q_tile = reinterpret_cast<float*>(smem);
  float* do_tile = q_tile + kSimtRows * kDh;
  float* k_tile = do_tile + kSimtRows * kDh;
  float* v_tile = k_tile + kSimtRows * (kDh + 1);

  const int bh = blockIdx.x, b = bh / H, h = bh % H;
  const int r0 = (gridDim.y - 1 - blockIdx.y) * kSimtRows;
  const int D = H * kDh;
  const int64_t stride = 3 * int64_t(D);
  const float* q_base = qkv + int64_t(b) * N * stride + h * kDh;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int tile_key_end = key_end(min(r0 + kSimtRows, N) - 1, N, causal_block);

  load_rows_simt<kDh>(q_tile, kDh, q_base, stride, r0, N);
  load_rows_simt<kDh>(do_tile, kDh, dout + int64_t(b) * N * D + h * kDh, D, r0, N);
  float dq[kSimtRowsPerWarp][kCols] = {};
  float row_lse[kSimtRowsPerWarp], row_delta[kSimtRowsPerWarp];
#pragma unroll
  for (int rr = 0; rr < kSimtRowsPerWarp; ++rr) {
    const int row = r0 + warp * kSimtRowsPerWarp + rr;
    row_lse[rr] = row < N ? lse[int64_t(bh) * N + row] : 0.0f;
    row_delta[rr] = row < N ? delta[int64_t(bh) * N + row] : 0.0f;
  }

  for (int c0 = 0; c0 < tile_key_end; c0 += kSimtRows) {
    __syncthreads();
    load_rows_simt<kDh>(k_tile, kDh + 1, q_base + D, stride, c0, N);
    load_rows_simt<kDh>(v_tile, kDh + 1, q_base + 2 * D, stride, c0, N);
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < kSimtRowsPerWarp; ++rr) {
      const int lr = warp * kSimtRowsPerWarp + rr, row = r0 + lr;
      if (row >= N) continue;
      const float s = dot_rows<kDh>(q_tile + lr * kDh, k_tile + lane * (kDh + 1)) * scale;
      const bool visible = c0 + lane < key_end(row, N, causal_block);
      const float p = visible ? expf(s - row_lse[rr]) : 0.0f;
      const float dp = dot_rows<kDh>(do_tile + lr * kDh, v_tile + lane * (kDh + 1));
      const float ds = p * (dp - row_delta[rr]);
      for (int k = 0; k < kSimtRows; ++k) {
        const float dsk = __shfl_sync(0xffffffffu, ds, k);
#pragma unroll
        for (int c = 0; c < kCols; ++c) dq[rr][c] = fmaf(dsk, k_tile[k * (kDh + 1) + lane + 32 * c], dq[rr][c]);
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < kSimtRowsPerWarp; ++rr) {
    const int row = r0 + warp * kSimtRowsPerWarp + rr;
    if (row >= N) continue;
    float* g = dqkv + (int64_t(b) * N + row) * stride + h * kDh;
#pragma unroll
    for (int c = 0; c < kCols; ++c) g[lane + 32 * c] += dq[rr][c] * scale;
  }
}

constexpr size_t simt_forward_smem(int dh) { return size_t(kSimtRows) * (3 * dh + 1) * sizeof(float); }
constexpr size_t simt_backward_smem(int dh) {
  return (size_t(kSimtRows) * (4 * dh + 2) + 2 * kSimtRows) * sizeof(float);
}

// ---------------------------------------------------------------------------------------------------------------
// Launchers.

void check_sizes(const char* op, int B, int N, int H, int dh, int causal_block) {
  require(B >= 0 && N >= 0 && H > 0 && causal_block >= 0, op, ": bad sizes B=", B, " N=", N, " H=", H,
          " causal_block=", causal_block);
  require(dh == 32 || dh == 64 || dh == 128, op, ": head dim dh=", dh, " is not supported (32, 64 or 128)");
  require(int64_t(B) * H < (int64_t(1) << 31), op, ": B*H=", int64_t(B) * H, " exceeds the grid");
}

void check_aligned(const char* op, const char* name, const void* p) {
  require(reinterpret_cast<uintptr_t>(p) % 16 == 0, op, ": ", name,
          " must be 16-byte aligned for the bf16 kernel's cp.async loads");
}

// Calls f(std::integral_constant<int, dh>) for the supported head dims.
template <class F>
void with_head_dim(int dh, F&& f) {
  switch (dh) {
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    case 128: f(std::integral_constant<int, 128>{}); break;
    default: bfm::fail("attention: head dim dh=", dh, " is not supported (32, 64 or 128)");
  }
}

// grid = (B*H, tiles); y is at most 65535.
dim3 head_tile_grid(const char* op, int B, int H, int N, int tile_rows) {
  const int tiles = (N + tile_rows - 1) / tile_rows;
  require(tiles <= 65535, op, ": N=", N, " gives ", tiles, " tiles of ", tile_rows, " rows, more than 65535");
  return dim3(unsigned(B * H), unsigned(tiles));
}

template <class Kernel>
void allow_shared(Kernel kernel, size_t bytes, const char* op) {
  detail::check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)), op);
}

template <int kDh>
void launch_forward_mma(bf16* out, float* lse, const bf16* qkv, int B, int N, int H, int causal_block,
                        cudaStream_t stream) {
  using Tile = ForwardTile<kDh>;
  const auto kernel = attention_forward_mma_kernel<kDh>;
  allow_shared(kernel, Tile::kSmemBytes, "attention_forward (bf16)");
  const float scale_log2 = kLog2e / sqrtf(float(kDh));
  kernel<<<head_tile_grid("attention_forward", B, H, N, Tile::kBlockM), Tile::kThreads, Tile::kSmemBytes,
           stream>>>(out, lse, qkv, N, H, causal_block, scale_log2);
  detail::check_launch("attention_forward (bf16 tensor cores)");
}

template <int kDh>
void launch_backward_mma(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse, const float* delta, int B,
                         int N, int H, int causal_block, cudaStream_t stream) {
  using Tile = BackwardTile<kDh>;
  const float scale = 1.0f / sqrtf(float(kDh)), scale_log2 = kLog2e * scale;
  const auto dkdv = attention_backward_dkdv_mma_kernel<kDh>;
  allow_shared(dkdv, Tile::kSmemBytes, "attention_backward dk/dv (bf16)");
  dkdv<<<head_tile_grid("attention_backward", B, H, N, Tile::kBlockKeys), Tile::kThreads, Tile::kSmemBytes,
         stream>>>(dqkv, dout, qkv, lse, delta, N, H, causal_block, scale, scale_log2);
  detail::check_launch("attention_backward dk/dv (bf16 tensor cores)");
  const auto dq = attention_backward_dq_mma_kernel<kDh>;
  allow_shared(dq, Tile::kSmemBytes, "attention_backward dq (bf16)");
  dq<<<head_tile_grid("attention_backward", B, H, N, Tile::kBlockKeys), Tile::kThreads, Tile::kSmemBytes,
       stream>>>(dqkv, dout, qkv, lse, delta, N, H, causal_block, scale, scale_log2);
  detail::check_launch("attention_backward dq (bf16 tensor cores)");
}

template <int kDh>
void launch_forward_simt(float* out, float* lse, const float* qkv, int B, int N, int H, int causal_block,
                         cudaStream_t stream) {
  const auto kernel = attention_forward_simt_kernel<kDh>;
  allow_shared(kernel, simt_forward_smem(kDh), "attention_forward (float)");
  kernel<<<head_tile_grid("attention_forward", B, H, N, kSimtRows), kSimtThreads, simt_forward_smem(kDh),
           stream>>>(out, lse, qkv, N, H, causal_block, 1.0f / sqrtf(float(kDh)));
  detail::check_launch("attention_forward (float)");
}

template <int kDh>
void launch_backward_simt(float* dqkv, const float* dout, const float* qkv, const float* lse, const float* delta,
                          int B, int N, int H, int causal_block, cudaStream_t stream) {
  const float scale = 1.0f / sqrtf(float(kDh));
  const dim3 grid = head_tile_grid("attention_backward", B, H, N, kSimtRows);
  const auto dkdv = attention_backward_dkdv_simt_kernel<kDh>;
  allow_shared(dkdv, simt_backward_smem(kDh), "attention_backward dk/dv (float)");
  dkdv<<<grid, kSimtThreads, simt_backward_smem(kDh), stream>>>(dqkv, dout, qkv, lse, delta, N, H, causal_block,
                                                                  scale);
  detail::check_launch("attention_backward dk/dv (float)");
  const auto dq = attention_backward_dq_simt_kernel<kDh>;
  allow_shared(dq, simt_backward_smem(kDh), "attention_backward dq (float)");
  dq<<<grid, kSimtThreads, simt_backward_smem(kDh), stream>>>(dqkv, dout, qkv, lse, delta, N, H, causal_block,
                                                                scale);
  detail::check_launch("attention_backward dq (float)");
}

// True on a device of compute capability 9.0 (H100, H200), the only one sm_90a code runs on.
bool current_device_is_sm90() {
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it so that the next launch check does not report it
    return false;
  }
  return major == 9 && minor == 0;
}

}  // namespace

namespace attention_detail {

const char* variant_name(ForwardVariant v) {
  switch (v) {
    case ForwardVariant::kMma: return "mma";
    case ForwardVariant::kWgmma: return "wgmma";
    default: return "auto";
  }
}

bool wgmma_forward_available(int dh) {
  return (dh == 64 || dh == 128) && current_device_is_sm90() && forward_wgmma_image_present();
}

ForwardVariant resolve_forward_variant(ForwardVariant requested, int dh) {
  ForwardVariant v = requested;
  if (v == ForwardVariant::kAuto) {
    if (const char* env = std::getenv("BFM_ATTENTION"); env != nullptr && *env != '\0') {
      const std::string_view e(env);
      if (e == "mma") v = ForwardVariant::kMma;
      else if (e == "wgmma") v = ForwardVariant::kWgmma;
      else require(e == "auto", "BFM_ATTENTION='", e, "' is not one of mma, wgmma, auto");
    }
  }
  if (v == ForwardVariant::kAuto) return wgmma_forward_available(dh) ? ForwardVariant::kWgmma : ForwardVariant::kMma;
  if (v == ForwardVariant::kWgmma) {
    require(dh == 64 || dh == 128, "attention_forward: the Hopper (wgmma) forward covers dh 64 and 128, not dh=", dh,
            " (unset BFM_ATTENTION or set it to mma)");
    require(current_device_is_sm90(),
            "attention_forward: the Hopper (wgmma) forward needs a GPU of compute capability 9.0 (H100, H200)");
    require(forward_wgmma_image_present(),
            "attention_forward: this build has no sm_90a code for the Hopper (wgmma) forward, or it cannot be loaded");
  }
  return v;
}

void attention_forward_variant(ForwardVariant variant, bf16* out, float* lse, const bf16* qkv, int B, int N, int H,
                               int dh, int causal_block, cudaStream_t stream, int wgmma_key_tile) {
  check_sizes("attention_forward", B, N, H, dh, causal_block);
  const ForwardVariant v = resolve_forward_variant(variant, dh);
  if (B == 0 || N == 0) return;
  check_aligned("attention_forward", "qkv", qkv);
  if (v == ForwardVariant::kWgmma) {
    launch_forward_wgmma(out, lse, qkv, B, N, H, dh, causal_block, wgmma_key_tile, stream);
    return;
  }
  with_head_dim(dh, [&](auto dh_c) {
    launch_forward_mma<decltype(dh_c)::value>(out, lse, qkv, B, N, H, causal_block, stream);
  });
}

}  // namespace attention_detail

template <typename T>
void attention_forward(T* out, float* lse, const T* qkv, int B, int N, int H, int dh, int causal_block,
                       cudaStream_t stream) {
  if constexpr (std::is_same_v<T, float>) {
    check_sizes("attention_forward", B, N, H, dh, causal_block);
    if (B == 0 || N == 0) return;
    with_head_dim(dh, [&](auto dh_c) {
      launch_forward_simt<decltype(dh_c)::value>(out, lse, qkv, B, N, H, causal_block, stream);
    });
  } else {
    attention_detail::attention_forward_variant(attention_detail::ForwardVariant::kAuto, out, lse, qkv, B, N, H, dh,
                                                causal_block, stream);
  }
}

namespace {
// The Hopper backward (attention_sm90_bwd.cu) where it can run, unless BFM_ATTENTION_BWD=mma asks for the portable
// one; BFM_ATTENTION_BWD=wgmma insists (an error where it cannot run).
bool use_sm90_backward(int dh) {
  const char* env = std::getenv("BFM_ATTENTION_BWD");
  const std::string e = env ? env : "auto";
  require(e == "auto" || e == "mma" || e == "wgmma", "BFM_ATTENTION_BWD='", e, "' is not one of mma, wgmma, auto");
  if (e == "mma") return false;
  const bool available = detail::attention_backward_sm90_available(dh);
  require(available || e != "wgmma", "BFM_ATTENTION_BWD=wgmma: the Hopper backward cannot run here (head dim ", dh,
          "; it needs compute capability 9.0 and head dim 64 or 128)");
  return available;
}
}  // namespace

template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse, int B, int N, int H,
                        int dh, int causal_block, cudaStream_t stream) {
  check_sizes("attention_backward", B, N, H, dh, causal_block);
  if (B == 0 || N == 0) return;
  if constexpr (std::is_same_v<T, bf16>) {
    if (use_sm90_backward(dh)) {
      detail::attention_backward_sm90(dqkv, dout, qkv, out, lse, B, N, H, dh, causal_block, stream);
      return;
    }
  }
  // Pass 1: delta [B, H, N] in this stream's scratch (read only by passes 2 and 3, queued behind it).
  const int64_t rows = int64_t(B) * H * N;
  float* delta = static_cast<float*>(detail::scratch(size_t(rows) * sizeof(float), stream, kScratchDelta));
  constexpr int kDeltaWarps = 8;
  const int64_t blocks = (rows + kDeltaWarps - 1) / kDeltaWarps;
  require(blocks < (int64_t(1) << 31), "attention_backward: B*H*N=", rows, " rows exceed the grid");
  attention_delta_kernel<T><<<unsigned(blocks), 32 * kDeltaWarps, 0, stream>>>(delta, dout, out, B, N, H, dh);
  detail::check_launch("attention_backward delta");
  with_head_dim(dh, [&](auto dh_c) {
    constexpr int kDh = decltype(dh_c)::value;
    if constexpr (std::is_same_v<T, float>) {
      launch_backward_simt<kDh>(dqkv, dout, qkv, lse, delta, B, N, H, causal_block, stream);
    } else {
      check_aligned("attention_backward", "qkv", qkv);
      check_aligned("attention_backward", "dout", dout);
      launch_backward_mma<kDh>(dqkv, dout, qkv, lse, delta, B, N, H, causal_block, stream);
    }
  });
}

template void attention_forward<float>(float*, float*, const float*, int, int, int, int, int, cudaStream_t);
template void attention_forward<bf16>(bf16*, float*, const bf16*, int, int, int, int, int, cudaStream_t);
template void attention_backward<float>(float*, const float*, const float*, const float*, const float*, int, int,
                                        int, int, int, cudaStream_t);
template void attention_backward<bf16>(bf16*, const bf16*, const bf16*, const bf16*, const float*, int, int, int,
                                       int, int, cudaStream_t);

}  // namespace bfm::kernels::cuda
