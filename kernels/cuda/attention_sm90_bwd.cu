// The Hopper (sm_90a) bf16 attention backward: FlashAttention-2's backward on warpgroup MMA (wgmma.mma_async),
// deterministic as the portable backward in attention.cu (three passes, one writer per gradient element, no
// atomics). Contract: kernels/cuda/attention_sm90_bwd.cuh (= cuda::attention_backward<bf16>). Same numerics as
// the mma.sync backward: scores and softmax in fp32, P and dS rounded to bf16 before their products, fp32
// accumulators, dqkv updated as bf16(float(old) + gradient).
//
// Notation (the CPU twin's): S = Q K^T (unscaled), P = exp(S * scale - lse), dV = P^T dO, dP = dO V^T,
// dS = P * (dP - delta), dQ = dS K * scale, dK = dS^T Q * scale, delta_i = sum_d dO_id O_id.
//
// Passes:
//   1. delta [B, H, N] fp32 (detail::scratch slot 9): a group of dh / 8 lanes per row, 16-byte loads, a fixed
//      shuffle tree.
//   2. dK, dV: a block of 2 warpgroups (256 threads) owns kBlockOwn = 128 keys of one (b, h); warpgroup w owns
//      keys 64w .. 64w + 63 and keeps their dK, dV [64 x dh] in fp32 registers (wgmma accumulator layout). K and V
//      are loaded once; query tiles of kBlockStream = 64 rows (q, dO, lse, delta) stream through shared memory by
//      cp.async, double-buffered. Per query tile and warpgroup:
//        S^T  [64 keys x 64 q] = K Q^T    wgmma m64n64k16 x dh/16, A = K (smem, K-major), B = Q (smem, K-major)
//        dP^T [64 keys x 64 q] = V dO^T   the same with V and dO (issued right behind S^T)
//        P^T = exp2(S^T * scale log2e - lse_q log2e) (masked), packed to bf16 as the register A operand
//        dV  [64 x dh] += P^T dO          wgmma m64n64k16, A = P^T (registers), B = dO (smem, MN-major: tnspB)
//        dS^T = P^T * (dP^T - delta_q), packed to bf16
//        dK  [64 x dh] += dS^T Q          wgmma m64n64k16, A = dS^T (registers), B = Q (smem, MN-major)
//      (for dh 128 each "m64n64" product over dh is two instructions, one per 64-column half).
//   3. dQ: a block of 2 warpgroups owns 128 queries (warpgroup w rows 64w ..), dQ [64 x dh] in registers; Q and
//      dO loaded once; key tiles of 64 rows (K, V) stream double-buffered. S = Q K^T, dP = dO V^T (both ss,
//      K-major), P, dS as above with the row's lse and delta in registers, dQ += dS K (A = dS registers, B = K
//      MN-major).
// Time-causal (causal_block = P): query i sees keys k < key_end(i) = min(N, (i / P + 1) P). Pass 2 starts at the
// query tile holding the first query of the key block's patch; pass 3 stops after the last key tile its last row
// sees. A tile is masked elementwise only where some pair in it is invisible (a straddling patch boundary, or
// rows past N); masked entries get P = dS = 0 (selected, never multiplied, so no inf or NaN can leak in).
//
// Shared-memory tiles: every tile of R rows x dh columns (R a multiple of 8) is stored as dh / 64 sub-tiles
// [R][64 bf16] (columns 64h .. 64h + 63 in sub-tile h, at tile + h * R * 128 bytes), rows of 128 bytes, with the
// 128-byte swizzle: the 16-byte chunk j of row r lies at chunk position j ^ (r % 8). Every tile starts on a
// 1024-byte boundary (the swizzle reads address bits 4-9). The same tile serves both majornesses:
//   K-major (A = K, V, Q, dO; B = Q, dO, K, V of the score products): canonical ((8, m), (T, 2k)) :
//     ((8T, SBO), (1, T)), i.e. 8-row groups SBO = 1024 bytes apart, LBO unused (1); the k-step kk (16 columns,
//     32 bytes) starts in sub-tile kk / 4 at byte 32 (kk % 4) of the row (the hardware swizzles the absolute
//     address, as CUTLASS's descriptor iterator and DeepGEMM rely on).
//   MN-major (B = dO, Q, K of the gradient products, tnspB = 1): canonical ((T, 8, m), (8, k)) :
//     ((1, T, LBO), (8T, SBO)): 64 N-elements contiguous per 128-byte row, 8 consecutive K-rows 128 bytes apart,
//     the next 8 K-rows SBO = 1024 bytes on, the next 64 N-elements LBO bytes on. Every instruction here has
//     N = 64 (one sub-tile), so LBO is never used (set to 1024 too). The k-step kk (16 rows) starts
//     16 * 128 = 2048 bytes on: a whole number of 1024-byte atoms.
//
// wgmma accumulator layout (m64nNk16, fp32): warp w' = (threadIdx / 32) % 4 of the warpgroup owns rows
// 16w' .. 16w' + 15; lane l (g = l / 4, t = l % 4) holds d[4i + e] = (row 16w' + g + 8 (e / 2), column
// 8i + 2t + e % 2), i = 0 .. N/8 - 1. The register A operand of m64nNk16 (bf16) is, per warp, the mma.sync
// m16n8k16 A fragment of its 16 rows: a0 = (g, 2t..2t+1), a1 = (g + 8, 2t..), a2 = (g, 8 + 2t..),
// a3 = (g + 8, 8 + 2t..). So the accumulator fragments of columns 16kk .. 16kk + 15, d[8kk .. 8kk + 7], packed
// pairwise to bf16 are exactly the A operand for k-step kk: a0 = d[8kk..+1], a1 = d[8kk+2..+3],
// a2 = d[8kk+4..+5], a3 = d[8kk+6..+7] (FlashAttention-2's register reuse of P and dS).
//
// Built for sm_90a only (kernels/CMakeLists.txt: an object library of its own with
// --generate-code=arch=compute_90a,code=sm_90a and no other architecture); kernel bodies are guarded by
// __CUDA_ARCH_FEAT_SM90_ALL so that any other pass compiles empty stubs, and attention_backward_sm90_available
// checks at run time (compute capability 9.0, kernel attributes, and a probe kernel that reports which image runs)
// before anything is launched.
#include "kernels/cuda/attention_sm90_bwd.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ptx.cuh"

namespace bfm::kernels::cuda::detail {
namespace {

using namespace ptx;  // the inline-PTX wrappers (kernels/cuda/ptx.cuh), called by their instruction names

constexpr float kLog2eBwd = 1.4426950408889634f;
constexpr int kScratchDeltaSm90 = 9;  // detail::scratch slot of this backward's delta rows, used nowhere else

template <int kDh>
struct Sm90BwdTile {
  static constexpr int kWarpgroups = 2;
  static constexpr int kThreads = 128 * kWarpgroups;
  static constexpr int kBlockOwn = 64 * kWarpgroups;  // keys (pass 2) or queries (pass 3) per block
  static constexpr int kBlockStream = 64;             // queries (pass 2) or keys (pass 3) per streamed tile
  static constexpr int kHalves = kDh / 64;            // 64-column sub-tiles per row
  static constexpr uint32_t kOwnBytes = uint32_t(kBlockOwn) * kDh * 2;        // one owned tile
  static constexpr uint32_t kStreamBytes = uint32_t(kBlockStream) * kDh * 2;  // one stage of one streamed tile
  // Owned tiles (K, V or Q, dO), two streamed tiles double-buffered, lse and delta [2][kBlockStream] fp32 (pass 2
  // only), and slack to align the base to 1024 bytes. dh 64: 66 KB; dh 128: 130 KB.
  static constexpr size_t kSmemBytes = 2 * size_t(kOwnBytes) + 4 * size_t(kStreamBytes) +
                                       4 * kBlockStream * sizeof(float) + 1024;
  // Blocks per SM the dQ kernel asks registers for: dh 64 fits two (at most 128 registers a thread, 132 KB of
  // shared memory); dh 128 (dQ alone is 64 registers) and the dK/dV kernel (dK and dV together 64 or 128) take one.
  static constexpr int kDqMinBlocks = kDh <= 64 ? 2 : 1;
  static_assert(kDh == 64 || kDh == 128, "the Hopper backward covers dh 64 and 128");
};

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define BFM_ATTENTION_SM90_BWD_BODY 1
#endif

#ifdef BFM_ATTENTION_SM90_BWD_BODY

__device__ __forceinline__ int key_end(int i, int N, int causal_block) {
  return causal_block > 0 ? min(N, (i / causal_block + 1) * causal_block) : N;
}
__device__ __forceinline__ int first_query_seeing(int k, int causal_block) {
  return causal_block > 0 ? k / causal_block * causal_block : 0;
}

// The A (or K-major B) descriptor of k-step kk (columns 16kk .. 16kk + 15 of dh) of the 64 or more rows that start
// at row `row0` (a multiple of 8) of a swizzled tile of kRows rows.
template <int kRows>
__device__ __forceinline__ uint64_t kmajor_desc(uint32_t tile, int row0, int kk) {
  return sw128_descriptor(tile + uint32_t((kk >> 2) * kRows * 128 + row0 * 128 + (kk & 3) * 32), 16);
}
// The MN-major B descriptor of k-step kk (rows 16kk .. 16kk + 15) and 64-column half hh of a swizzled tile of
// kRows rows. N = 64 is one 64-element block along N, so LBO (the step to the next block) is never used; it is
// set equal to SBO (1024, as the forward in attention_sm90.cu does), which reads the right rows whichever of the
// two fields the hardware took for the 8-row step along K.
template <int kRows>
__device__ __forceinline__ uint64_t mnmajor_desc(uint32_t tile, int kk, int hh) {
  return sw128_descriptor(tile + uint32_t(hh * kRows * 128 + kk * 16 * 128), 1024);
}

#endif  // BFM_ATTENTION_SM90_BWD_BODY

// ---------------------------------------------------------------------------------------------------------------
// Pass 1: delta [B, H, N] = rowsum(dO * O). Row r = (b N + i) H + h of the [B N H, dh] view of dout and out; a
// group of kDh / 8 consecutive lanes per row, each 8 elements (16 bytes), summed by a fixed xor tree.
template <int kDh>
__global__ void __launch_bounds__(256) attention_sm90_bwd_delta_kernel(float* delta, const __nv_bfloat16* dout,
                                                                       const __nv_bfloat16* out, int B, int N, int H) {
#ifdef BFM_ATTENTION_SM90_BWD_BODY
  constexpr int kLanes = kDh / 8;  // 8 or 16: a power of two dividing 32
  constexpr int kRowsPerBlock = 256 / kLanes;
  const int64_t rows = int64_t(B) * N * H;
  const int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kLanes;
  const int part = int(threadIdx.x % kLanes);
  float sum = 0.0f;
  if (r < rows) {
    const uint4 go = *reinterpret_cast<const uint4*>(dout + r * kDh + part * 8);
    const uint4 oo = *reinterpret_cast<const uint4*>(out + r * kDh + part * 8);
    const uint32_t gw[4] = {go.x, go.y, go.z, go.w}, ow[4] = {oo.x, oo.y, oo.z, oo.w};
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const float2 gf = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&gw[w]));
      const float2 of = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&ow[w]));
      sum = fmaf(gf.x, of.x, sum);
      sum = fmaf(gf.y, of.y, sum);
    }
  }
#pragma unroll
  for (int off = kLanes / 2; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (part == 0 && r < rows) {
    const int64_t bi = r / H;
    const int h = int(r % H), b = int(bi / N), i = int(bi % N);
    delta[(int64_t(b) * H + h) * N + i] = sum;
  }
#else
  (void)delta, (void)dout, (void)out, (void)B, (void)N, (void)H;
#endif
}

// ---------------------------------------------------------------------------------------------------------------
// Pass 2: dK, dV per block of kBlockOwn keys (see the top of the file). Shared memory (offsets from the
// 1024-aligned base): K [kBlockOwn rows], V [kBlockOwn], Q [2 stages][kBlockStream], dO [2][kBlockStream],
// lse [2][kBlockStream] fp32, delta [2][kBlockStream] fp32.
template <int kDh>
__global__ void __launch_bounds__(Sm90BwdTile<kDh>::kThreads, 1)
    attention_sm90_bwd_dkdv_kernel(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv,
                                   const float* lse, const float* delta, int N, int H, int causal_block, float scale,
                                   float scale_log2) {
#ifdef BFM_ATTENTION_SM90_BWD_BODY
  using Tile = Sm90BwdTile<kDh>;
  constexpr int kBlockKeys = Tile::kBlockOwn, kBlockQ = Tile::kBlockStream, kThreads = Tile::kThreads;
  constexpr int kHalves = Tile::kHalves, kQFrags = kBlockQ / 8, kDhFrags = kDh / 8;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t raw = shared_address(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  const uint32_t k_tile = base;
  const uint32_t v_tile = k_tile + Tile::kOwnBytes;
  const uint32_t q_stages = v_tile + Tile::kOwnBytes;              // [2][kHalves][kBlockQ][64]
  const uint32_t do_stages = q_stages + 2 * Tile::kStreamBytes;     // [2][kHalves][kBlockQ][64]
  const uint32_t lse_stages = do_stages + 2 * Tile::kStreamBytes;   // [2][kBlockQ] fp32
  const uint32_t delta_stages = lse_stages + 2 * kBlockQ * 4;       // [2][kBlockQ] fp32
  const float* lse_smem = reinterpret_cast<const float*>(smem_raw + (lse_stages - raw));
  const float* delta_smem = reinterpret_cast<const float*>(smem_raw + (delta_stages - raw));

  const int bh = blockIdx.x, b = bh / H, h = bh % H;
  const int c0 = blockIdx.y * kBlockKeys;  // the earliest keys (seen by the most queries) start first
  const int D = H * kDh;
  const int64_t stride = 3 * int64_t(D);
  const __nv_bfloat16* q_base = qkv + int64_t(b) * N * stride + h * kDh;
  const __nv_bfloat16* do_base = dout + int64_t(b) * N * D + h * kDh;
  const float* lse_head = lse + int64_t(bh) * N;
  const float* delta_head = delta + int64_t(bh) * N;

  // Query tiles wholly before the first patch that sees key c0 are skipped.
  const int first_tile = first_query_seeing(c0, causal_block) / kBlockQ;
  const int n_tiles = (N + kBlockQ - 1) / kBlockQ;

  load_rows_sw128<kBlockKeys, kDh, kThreads>(k_tile, q_base + D, stride, c0, N);
  load_rows_sw128<kBlockKeys, kDh, kThreads>(v_tile, q_base + 2 * D, stride, c0, N);
  const auto load_queries = [&](int tile, int stage) {
    const int q0 = tile * kBlockQ;
    load_rows_sw128<kBlockQ, kDh, kThreads>(q_stages + stage * Tile::kStreamBytes, q_base, stride, q0, N);
    load_rows_sw128<kBlockQ, kDh, kThreads>(do_stages + stage * Tile::kStreamBytes, do_base, D, q0, N);
    const int x = int(threadIdx.x);
    if (x < kBlockQ) {
      const bool valid = q0 + x < N;
      cp_async_4(lse_stages + uint32_t((stage * kBlockQ + x) * 4), lse_head + (valid ? q0 + x : 0), valid);
    } else if (x < 2 * kBlockQ) {
      const bool valid = q0 + x - kBlockQ < N;
      cp_async_4(delta_stages + uint32_t((stage * kBlockQ + x - kBlockQ) * 4),
                 delta_head + (valid ? q0 + x - kBlockQ : 0), valid);
    }
  };
  load_queries(first_tile, 0);
  cp_async_commit();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warpgroup = threadIdx.x >> 7;
  const int t = lane & 3, g = lane >> 2;
  const int wg_key0 = c0 + warpgroup * 64;  // this warpgroup's first key
  // The two keys this thread's accumulator rows hold: e / 2 = 0 -> keys[0], 1 -> keys[1].
  const int keys[2] = {c0 + warp * 16 + g, c0 + warp * 16 + g + 8};
  const int wg_row0 = warpgroup * 64;  // this warpgroup's rows of K and V in the block's tiles

  float dk[kDh / 2], dv[kDh / 2];  // accumulators: element 4i + e at (key keys[e/2], column 8i + 2t + e%2)
#pragma unroll
  for (int i = 0; i < kDh / 2; ++i) dk[i] = dv[i] = 0.0f;
  float st[kBlockQ / 2], dpt[kBlockQ / 2];  // S^T, dP^T: element 4i + e at (key keys[e/2], query q0 + 8i + 2t + e%2)
  uint32_t pa[kBlockQ / 16][4], da[kBlockQ / 16][4];  // P^T and dS^T in bf16, A operands per 16 queries

  for (int tile = first_tile; tile < n_tiles; ++tile) {
    const int stage = (tile - first_tile) & 1;
    // Prefetch the next query tile into the other stage (last read by the previous iteration, whose wgmma all
    // completed before its closing barrier); a group is committed every iteration, empty or not, so that
    // wait_group 1 always means "everything but the newest prefetch has landed".
    if (tile + 1 < n_tiles) load_queries(tile + 1, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    fence_proxy_async_shared();
    __syncthreads();
    const uint32_t q_tile = q_stages + stage * Tile::kStreamBytes;
    const uint32_t do_tile = do_stages + stage * Tile::kStreamBytes;
    const float* lse_tile = lse_smem + stage * kBlockQ;
    const float* delta_tile = delta_smem + stage * kBlockQ;
    const int q0 = tile * kBlockQ;

    // S^T = K Q^T and dP^T = V dO^T, two commit groups; the first k-step of each overwrites.
    fence_registers(st);
    fence_registers(dpt);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kDh / 16; ++kk)
      wgmma_m64n64k16_ss(st, kmajor_desc<kBlockKeys>(k_tile, wg_row0, kk), kmajor_desc<kBlockQ>(q_tile, 0, kk),
                         kk > 0 ? 1 : 0);
    wgmma_commit();
#pragma unroll
    for (int kk = 0; kk < kDh / 16; ++kk)
      wgmma_m64n64k16_ss(dpt, kmajor_desc<kBlockKeys>(v_tile, wg_row0, kk), kmajor_desc<kBlockQ>(do_tile, 0, kk),
                         kk > 0 ? 1 : 0);
    wgmma_commit();
    wgmma_wait<1>();  // S^T has landed (dP^T may still run)
    fence_registers(st);

    // P^T = exp(S^T * scale - lse_query). Masked where a pair is invisible: queries past N (zero rows, lse 0),
    // keys a query does not see (later patches, keys past N). The tile's first query has the smallest key_end,
    // so a tile it sees whole (for this warpgroup's keys) needs no mask.
    const bool masked = q0 + kBlockQ > N || wg_key0 + 64 > key_end(q0, N, causal_block);
#pragma unroll
    for (int i = 0; i < kQFrags; ++i) {
      const float2 l = *reinterpret_cast<const float2*>(lse_tile + 8 * i + 2 * t);
      const float l2[2] = {l.x * kLog2eBwd, l.y * kLog2eBwd};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(fmaf(st[4 * i + e], scale_log2, -l2[e & 1]));
        if (masked) {
          const int query = q0 + 8 * i + 2 * t + (e & 1);
          st[4 * i + e] = query < N && keys[e >> 1] < key_end(query, N, causal_block) ? p : 0.0f;
        } else {
          st[4 * i + e] = p;
        }
      }
    }
#pragma unroll
    for (int kk = 0; kk < kBlockQ / 16; ++kk) {
      pa[kk][0] = pack_bf16(st[8 * kk + 0], st[8 * kk + 1]);
      pa[kk][1] = pack_bf16(st[8 * kk + 2], st[8 * kk + 3]);
      pa[kk][2] = pack_bf16(st[8 * kk + 4], st[8 * kk + 5]);
      pa[kk][3] = pack_bf16(st[8 * kk + 6], st[8 * kk + 7]);
    }

    // dV [64 x dh] += P^T [64 x kBlockQ] dO [kBlockQ x dh]: per 16 queries, one instruction per 64 columns.
    fence_registers(pa);
    fence_registers(dv);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBlockQ / 16; ++kk)
#pragma unroll
      for (int hh = 0; hh < kHalves; ++hh)
        wgmma_m64n64k16_rs_tnspb(dv + 32 * hh, pa[kk], mnmajor_desc<kBlockQ>(do_tile, kk, hh));
    wgmma_commit();
    wgmma_wait<1>();  // dP^T has landed (dV may still run)
    fence_registers(dpt);

    // dS^T = P^T * (dP^T - delta_query), in bf16 for the dK product.
#pragma unroll
    for (int i = 0; i < kQFrags; ++i) {
      const float2 dl = *reinterpret_cast<const float2*>(delta_tile + 8 * i + 2 * t);
      const float dd[2] = {dl.x, dl.y};
#pragma unroll
      for (int e = 0; e < 4; ++e) dpt[4 * i + e] = st[4 * i + e] * (dpt[4 * i + e] - dd[e & 1]);
    }
#pragma unroll
    for (int kk = 0; kk < kBlockQ / 16; ++kk) {
      da[kk][0] = pack_bf16(dpt[8 * kk + 0], dpt[8 * kk + 1]);
      da[kk][1] = pack_bf16(dpt[8 * kk + 2], dpt[8 * kk + 3]);
      da[kk][2] = pack_bf16(dpt[8 * kk + 4], dpt[8 * kk + 5]);
      da[kk][3] = pack_bf16(dpt[8 * kk + 6], dpt[8 * kk + 7]);
    }

    // dK [64 x dh] += dS^T [64 x kBlockQ] Q [kBlockQ x dh] (times scale at the end).
    fence_registers(da);
    fence_registers(dk);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBlockQ / 16; ++kk)
#pragma unroll
      for (int hh = 0; hh < kHalves; ++hh)
        wgmma_m64n64k16_rs_tnspb(dk + 32 * hh, da[kk], mnmajor_desc<kBlockQ>(q_tile, kk, hh));
    wgmma_commit();
    wgmma_wait<0>();
    fence_registers(dv);
    fence_registers(dk);
    fence_registers(pa);
    fence_registers(da);
    __syncthreads();  // both warpgroups are done with this stage before the next iteration refills it
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
      *pk = pack_bf16(k_old.x + dk[4 * i + 2 * r] * scale, k_old.y + dk[4 * i + 2 * r + 1] * scale);
      *pv = pack_bf16(v_old.x + dv[4 * i + 2 * r], v_old.y + dv[4 * i + 2 * r + 1]);
    }
  }
#else
  // Not an sm_90a pass: an empty stub that is never launched (see the top of the file).
  (void)dqkv, (void)dout, (void)qkv, (void)lse, (void)delta, (void)N, (void)H, (void)causal_block, (void)scale,
      (void)scale_log2;
#endif
}

// ---------------------------------------------------------------------------------------------------------------
// Pass 3: dQ per block of kBlockOwn queries. Shared memory: Q [kBlockOwn rows], dO [kBlockOwn],
// K [2 stages][kBlockStream], V [2][kBlockStream].
template <int kDh>
__global__ void __launch_bounds__(Sm90BwdTile<kDh>::kThreads, Sm90BwdTile<kDh>::kDqMinBlocks)
    attention_sm90_bwd_dq_kernel(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv,
                                 const float* lse, const float* delta, int N, int H, int causal_block, float scale,
                                 float scale_log2) {
#ifdef BFM_ATTENTION_SM90_BWD_BODY
  using Tile = Sm90BwdTile<kDh>;
  constexpr int kBlockM = Tile::kBlockOwn, kBlockN = Tile::kBlockStream, kThreads = Tile::kThreads;
  constexpr int kHalves = Tile::kHalves, kKeyFrags = kBlockN / 8, kDhFrags = kDh / 8;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t base = (shared_address(smem_raw) + 1023u) & ~1023u;
  const uint32_t q_tile = base;
  const uint32_t do_tile = q_tile + Tile::kOwnBytes;
  const uint32_t k_stages = do_tile + Tile::kOwnBytes;           // [2][kHalves][kBlockN][64]
  const uint32_t v_stages = k_stages + 2 * Tile::kStreamBytes;   // [2][kHalves][kBlockN][64]

  const int bh = blockIdx.x, b = bh / H, h = bh % H;
  const int r0 = (gridDim.y - 1 - blockIdx.y) * kBlockM;  // the latest queries (that see the most keys) first
  const int D = H * kDh;
  const int64_t stride = 3 * int64_t(D);
  const __nv_bfloat16* q_base = qkv + int64_t(b) * N * stride + h * kDh;
  const __nv_bfloat16* k_base = q_base + D;
  const __nv_bfloat16* v_base = q_base + 2 * D;
  const __nv_bfloat16* do_base = dout + int64_t(b) * N * D + h * kDh;

  // Keys the block's last row sees: no key tile at or past them is visited.
  const int tile_key_end = key_end(min(r0 + kBlockM, N) - 1, N, causal_block);
  const int n_key_tiles = (tile_key_end + kBlockN - 1) / kBlockN;

  load_rows_sw128<kBlockM, kDh, kThreads>(q_tile, q_base, stride, r0, N);
  load_rows_sw128<kBlockM, kDh, kThreads>(do_tile, do_base, D, r0, N);
  load_rows_sw128<kBlockN, kDh, kThreads>(k_stages, k_base, stride, 0, N);
  load_rows_sw128<kBlockN, kDh, kThreads>(v_stages, v_base, stride, 0, N);
  cp_async_commit();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warpgroup = threadIdx.x >> 7;
  const int t = lane & 3, g = lane >> 2;
  const int wg_row0 = warpgroup * 64;       // this warpgroup's rows of Q and dO in the block's tiles
  const int wg_first = r0 + wg_row0;        // and its first query
  const int rows[2] = {r0 + warp * 16 + g, r0 + warp * 16 + g + 8};  // e / 2 = 0 -> rows[0], 1 -> rows[1]
  float row_lse2[2], row_delta[2];
  int row_key_end[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const bool valid = rows[r] < N;
    row_lse2[r] = valid ? lse[int64_t(bh) * N + rows[r]] * kLog2eBwd : 0.0f;
    row_delta[r] = valid ? delta[int64_t(bh) * N + rows[r]] : 0.0f;
    row_key_end[r] = key_end(rows[r], N, causal_block);
  }
  // The smallest key_end of this warpgroup's rows: key tiles wholly below it need no mask.
  const int wg_key_end = key_end(wg_first, N, causal_block);

  float dq[kDh / 2];  // element 4i + e at (row rows[e/2], column 8i + 2t + e%2)
#pragma unroll
  for (int i = 0; i < kDh / 2; ++i) dq[i] = 0.0f;
  float s[kBlockN / 2], dp[kBlockN / 2];  // S, dP: element 4i + e at (row rows[e/2], key c0 + 8i + 2t + e%2)
  uint32_t da[kBlockN / 16][4];           // dS in bf16, the A operand per 16 keys

  for (int j = 0; j < n_key_tiles; ++j) {
    const int stage = j & 1;
    if (j + 1 < n_key_tiles) {
      const uint32_t next = uint32_t(stage ^ 1) * Tile::kStreamBytes;
      load_rows_sw128<kBlockN, kDh, kThreads>(k_stages + next, k_base, stride, (j + 1) * kBlockN, N);
      load_rows_sw128<kBlockN, kDh, kThreads>(v_stages + next, v_base, stride, (j + 1) * kBlockN, N);
    }
    cp_async_commit();
    cp_async_wait<1>();
    fence_proxy_async_shared();
    __syncthreads();
    const uint32_t k_tile = k_stages + uint32_t(stage) * Tile::kStreamBytes;
    const uint32_t v_tile = v_stages + uint32_t(stage) * Tile::kStreamBytes;
    const int c0 = j * kBlockN;

    // S = Q K^T and dP = dO V^T, two commit groups.
    fence_registers(s);
    fence_registers(dp);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kDh / 16; ++kk)
      wgmma_m64n64k16_ss(s, kmajor_desc<kBlockM>(q_tile, wg_row0, kk), kmajor_desc<kBlockN>(k_tile, 0, kk),
                         kk > 0 ? 1 : 0);
    wgmma_commit();
#pragma unroll
    for (int kk = 0; kk < kDh / 16; ++kk)
      wgmma_m64n64k16_ss(dp, kmajor_desc<kBlockM>(do_tile, wg_row0, kk), kmajor_desc<kBlockN>(v_tile, 0, kk),
                         kk > 0 ? 1 : 0);
    wgmma_commit();
    wgmma_wait<1>();  // S has landed
    fence_registers(s);

    // P = exp(S * scale - lse_row); zero where the row does not see the key (later patch, or past N).
    const bool masked = c0 + kBlockN > wg_key_end;
#pragma unroll
    for (int i = 0; i < kKeyFrags; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(fmaf(s[4 * i + e], scale_log2, -row_lse2[e >> 1]));
        if (masked) {
          const int key = c0 + 8 * i + 2 * t + (e & 1);
          s[4 * i + e] = key < row_key_end[e >> 1] ? p : 0.0f;
        } else {
          s[4 * i + e] = p;
        }
      }
    wgmma_wait<0>();  // dP has landed
    fence_registers(dp);

    // dS = P * (dP - delta_row), in bf16 for the dQ product.
#pragma unroll
    for (int i = 0; i < kKeyFrags; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) dp[4 * i + e] = s[4 * i + e] * (dp[4 * i + e] - row_delta[e >> 1]);
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      da[kk][0] = pack_bf16(dp[8 * kk + 0], dp[8 * kk + 1]);
      da[kk][1] = pack_bf16(dp[8 * kk + 2], dp[8 * kk + 3]);
      da[kk][2] = pack_bf16(dp[8 * kk + 4], dp[8 * kk + 5]);
      da[kk][3] = pack_bf16(dp[8 * kk + 6], dp[8 * kk + 7]);
    }

    // dQ [64 x dh] += dS [64 x kBlockN] K [kBlockN x dh] (times scale at the end).
    fence_registers(da);
    fence_registers(dq);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk)
#pragma unroll
      for (int hh = 0; hh < kHalves; ++hh)
        wgmma_m64n64k16_rs_tnspb(dq + 32 * hh, da[kk], mnmajor_desc<kBlockN>(k_tile, kk, hh));
    wgmma_commit();
    wgmma_wait<0>();
    fence_registers(dq);
    fence_registers(da);
    __syncthreads();  // both warpgroups are done with this stage before iteration j + 1 refills it
  }

  // dqkv (q third) += dQ * scale: this thread is the only writer of these elements.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (rows[r] >= N) continue;
    __nv_bfloat16* gq = dqkv + (int64_t(b) * N + rows[r]) * stride + h * kDh + 2 * t;
#pragma unroll
    for (int i = 0; i < kDhFrags; ++i) {
      uint32_t* pq = reinterpret_cast<uint32_t*>(gq + i * 8);
      const float2 q_old = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(pq));
      *pq = pack_bf16(q_old.x + dq[4 * i + 2 * r] * scale, q_old.y + dq[4 * i + 2 * r + 1] * scale);
    }
  }
#else
  (void)dqkv, (void)dout, (void)qkv, (void)lse, (void)delta, (void)N, (void)H, (void)causal_block, (void)scale,
      (void)scale_log2;
#endif
}

// Writes 1 where the running image is the sm_90a one (its guarded body compiled), 0 in any other image.
__global__ void attention_sm90_bwd_probe_kernel(int* flag) {
#ifdef BFM_ATTENTION_SM90_BWD_BODY
  *flag = 1;
#else
  *flag = 0;
#endif
}

// ---------------------------------------------------------------------------------------------------------------
// Launchers.

template <int kDh>
void launch_sm90_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse, const float* delta, int B,
                          int N, int H, int causal_block, cudaStream_t stream) {
  using Tile = Sm90BwdTile<kDh>;
  const float scale = 1.0f / sqrtf(float(kDh)), scale_log2 = kLog2eBwd * scale;
  const int tiles = (N + Tile::kBlockOwn - 1) / Tile::kBlockOwn;
  require(tiles <= 65535, "attention_backward (sm90): N=", N, " gives ", tiles, " tiles of ", Tile::kBlockOwn,
          " rows, more than 65535");
  const dim3 grid(unsigned(B * H), unsigned(tiles));
  const auto dkdv = attention_sm90_bwd_dkdv_kernel<kDh>;
  check(cudaFuncSetAttribute(dkdv, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Tile::kSmemBytes)),
        "attention_backward dk/dv (bf16 wgmma)");
  dkdv<<<grid, Tile::kThreads, Tile::kSmemBytes, stream>>>(dqkv, dout, qkv, lse, delta, N, H, causal_block, scale,
                                                           scale_log2);
  check_launch("attention_backward dk/dv (bf16 wgmma, sm_90a)");
  const auto dq = attention_sm90_bwd_dq_kernel<kDh>;
  check(cudaFuncSetAttribute(dq, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Tile::kSmemBytes)),
        "attention_backward dq (bf16 wgmma)");
  dq<<<grid, Tile::kThreads, Tile::kSmemBytes, stream>>>(dqkv, dout, qkv, lse, delta, N, H, causal_block, scale,
                                                         scale_log2);
  check_launch("attention_backward dq (bf16 wgmma, sm_90a)");
}

template <int kDh>
void launch_sm90_delta(float* delta, const bf16* dout, const bf16* out, int B, int N, int H, cudaStream_t stream) {
  constexpr int kRowsPerBlock = 256 / (kDh / 8);
  const int64_t rows = int64_t(B) * N * H;
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  require(blocks < (int64_t(1) << 31), "attention_backward (sm90): B*N*H=", rows, " rows exceed the grid");
  attention_sm90_bwd_delta_kernel<kDh><<<unsigned(blocks), 256, 0, stream>>>(delta, dout, out, B, N, H);
  check_launch("attention_backward delta (bf16 wgmma, sm_90a)");
}

// Per device ordinal: 0 unknown, 1 available, 2 not.
constexpr int kMaxDevices = 64;
std::atomic<int> g_sm90_bwd_state[kMaxDevices];

bool probe_sm90_image() {
  // The attributes of every kernel of the file can be read (the image loads on this device) and are those of
  // compute capability 9.0 machine code...
  cudaFuncAttributes attr{};
  const void* kernels[] = {reinterpret_cast<const void*>(attention_sm90_bwd_dkdv_kernel<64>),
                           reinterpret_cast<const void*>(attention_sm90_bwd_dkdv_kernel<128>),
                           reinterpret_cast<const void*>(attention_sm90_bwd_dq_kernel<64>),
                           reinterpret_cast<const void*>(attention_sm90_bwd_dq_kernel<128>),
                           reinterpret_cast<const void*>(attention_sm90_bwd_delta_kernel<64>),
                           reinterpret_cast<const void*>(attention_sm90_bwd_delta_kernel<128>)};
  for (const void* k : kernels) {
    if (cudaFuncGetAttributes(&attr, k) != cudaSuccess || attr.binaryVersion != 90) {
      cudaGetLastError();
      return false;
    }
  }
  // ... and the image the driver runs is the sm_90a one: the probe's guarded body writes 1.
  int* flag = nullptr;
  if (cudaMalloc(&flag, sizeof(int)) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  int host = -1;
  bool ok = cudaMemset(flag, 0xff, sizeof(int)) == cudaSuccess;
  if (ok) {
    attention_sm90_bwd_probe_kernel<<<1, 1>>>(flag);
    ok = cudaGetLastError() == cudaSuccess && cudaMemcpy(&host, flag, sizeof(int), cudaMemcpyDeviceToHost) ==
                                                  cudaSuccess;
  }
  cudaFree(flag);
  cudaGetLastError();
  return ok && host == 1;
}

}  // namespace

bool attention_backward_sm90_available(int dh) {
  if (dh != 64 && dh != 128) return false;
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it so that the next launch check does not report it
    return false;
  }
  if (major != 9 || minor != 0) return false;
  int state = g_sm90_bwd_state[device].load(std::memory_order_relaxed);
  if (state == 0) {
    state = probe_sm90_image() ? 1 : 2;
    g_sm90_bwd_state[device].store(state, std::memory_order_relaxed);
  }
  return state == 1;
}

void attention_backward_sm90(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B,
                             int N, int H, int dh, int causal_block, cudaStream_t stream) {
  const char* op = "attention_backward (bf16 wgmma)";
  require(B >= 0 && N >= 0 && H > 0 && causal_block >= 0, op, ": bad sizes B=", B, " N=", N, " H=", H,
          " causal_block=", causal_block);
  require(dh == 64 || dh == 128, op, ": head dim dh=", dh, " is not supported (64 or 128)");
  require(int64_t(B) * H < (int64_t(1) << 31), op, ": B*H=", int64_t(B) * H, " exceeds the grid");
  require(attention_backward_sm90_available(dh), op,
          ": needs a GPU of compute capability 9.0 (H100, H200) and this build's sm_90a code");
  if (B == 0 || N == 0) return;
  require(aligned16(qkv) && aligned16(dout) && aligned16(out), op,
          ": qkv, dout and out must be 16-byte aligned for the 16-byte loads");
  require(reinterpret_cast<uintptr_t>(dqkv) % 4 == 0, op, ": dqkv must be 4-byte aligned");

  // Pass 1: delta [B, H, N] in this stream's scratch (read only by passes 2 and 3, queued behind it).
  const int64_t rows = int64_t(B) * H * N;
  float* delta = static_cast<float*>(scratch(size_t(rows) * sizeof(float), stream, kScratchDeltaSm90));
  if (dh == 64) {
    launch_sm90_delta<64>(delta, dout, out, B, N, H, stream);
    launch_sm90_backward<64>(dqkv, dout, qkv, lse, delta, B, N, H, causal_block, stream);
  } else {
    launch_sm90_delta<128>(delta, dout, out, B, N, H, stream);
    launch_sm90_backward<128>(dqkv, dout, qkv, lse, delta, B, N, H, causal_block, stream);
  }
}

}  // namespace bfm::kernels::cuda::detail
