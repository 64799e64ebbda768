// The Hopper (sm_90a) bf16 attention forward: warpgroup MMA (wgmma.mma_async), FlashAttention-3's data flow
// without its warp specialisation. Same contract and same numerics as attention_forward_mma_kernel in
// attention.cu (fp32 scores and softmax, P rounded to bf16 before P V, out rounded to bf16, lse in fp32);
// bench/ATTENTION_NOTES.md has the design notes and the numbers, kernels/cuda/attention_sm90.cuh how it is chosen.
//
// Built for sm_90a only (kernels/CMakeLists.txt compiles this file in an object library of its own with
// --generate-code=arch=compute_90a,code=sm_90a and no other architecture), so the driver can load no other
// image of it; the body is still guarded by __CUDA_ARCH_FEAT_SM90_ALL so that any other pass would compile an
// empty stub. attention.cu launches it only on a device of compute capability 9.0.
//
// A block of 2 warpgroups (256 threads) owns kBlockM = 128 queries of one head; warpgroup w owns rows 64w ..
// 64w + 63, and inside it warp w' (= threadIdx / 32 % 4) rows 16w' .. 16w' + 15, exactly the rows that warp
// threadIdx / 32 owns in the mma.sync kernel. Per key tile of kBlockN keys:
//   S [64 x kBlockN] = Q K^T   wgmma m64n{kBlockN}k16, A = Q and B = K both from shared memory (K-major)
//   online softmax on the fp32 accumulators in registers (as in attention.cu)
//   O [64 x dh] += P V         wgmma m64n64k16 per 64 columns of dh, A = P from registers (bf16, packed from the
//                              S accumulators), B = V from shared memory read transposed (tnspB = 1: MN-major)
// K/V tiles stream through shared memory by cp.async, double-buffered, exactly as in the mma.sync kernel.
//
// Shared-memory layout (every tile 1024-byte aligned): a tile of R rows x dh columns is stored as dh / 64
// sub-tiles [R][64] (columns 64h .. 64h + 63 in sub-tile h), each row 128 bytes, with the 128-byte swizzle:
// the 16-byte chunk j of row r sits at chunk position j ^ (r % 8). This is CUTLASS's Layout_K_SW128_Atom tiled
// over the rows (for Q and K, read K-major) and equally its Layout_MN_SW128_Atom tiled over the keys (for V read
// MN-major: 64 contiguous dh elements per key row, 8 key rows per 1024-byte atom).
//
// wgmma shared-memory matrix descriptor (64 bits): start address >> 4 in bits 0-13, leading byte offset >> 4 in
// bits 16-29, stride byte offset >> 4 in bits 32-45, base offset bits 49-51 (0: every atom is 1024-aligned and a
// start address moves only within a 128-byte row or by whole atoms), swizzle mode in bits 62-63 (1 = 128B).
//   K-major (Q as A, K as B): SBO = 1024 (from one group of 8 rows to the next); LBO unused for swizzled K-major
//   layouts (1, as CUTLASS sets it). The k-step kk (16 columns, 32 bytes) starts at sub-tile kk / 4, byte
//   kk % 4 * 32 of the row: the hardware applies the swizzle to the absolute address bits, as CUTLASS's
//   descriptor iterator relies on.
//   MN-major (V as B, tnspB): canonical ((8 x 8 elements, m), (8 rows, k)) : ((1, LBO), (128 bytes, SBO)), so SBO
//   = 1024 (from 8 key rows to the next 8) and LBO = the step between 64-column atoms. Each instruction here has
//   N = 64, a single atom along dh, so LBO is unused: it is set to 1024 too, which is right whichever of the two
//   fields the hardware were to read for the key step. The k-step kk (16 keys) starts 16 rows = 2048 bytes on.
#include "kernels/cuda/attention_sm90.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ptx.cuh"

namespace bfm::kernels::cuda::attention_detail {
namespace {

using namespace ptx;  // the inline-PTX wrappers (kernels/cuda/ptx.cuh), called by their instruction names

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -__builtin_huge_valf();

template <int kDh, int kKeys>
struct WgmmaForwardTile {
  static constexpr int kWarpgroups = 2;
  static constexpr int kThreads = 128 * kWarpgroups;
  static constexpr int kBlockM = 64 * kWarpgroups;
  // Keys per streamed tile (ptxas, CUDA 13.0):
  //   dh 64, 64 keys: S 32 registers, O 32, P 16: 117 registers, so two blocks per SM (launch bounds cap 128),
  //     whose independent schedules overlap one block's softmax with the other's tensor-core work.
  //   dh 64, 128 keys: 183 registers, one block per SM; S = Q K^T as m64n128k16 reads a third less shared memory
  //     per product. Kept to be timed against the former (bench_attention's bfm-wgmma128 rows).
  //   dh 128, 128 keys (FlashAttention-3's tile): 241 registers, one block per SM (161 KB of shared memory).
  static constexpr int kBlockN = kKeys;
  static constexpr int kMinBlocks = kDh == 64 && kKeys == 64 ? 2 : 1;
  static constexpr int kHalves = kDh / 64;  // 64-column sub-tiles per row
  static constexpr size_t kQBytes = size_t(kBlockM) * kDh * 2;
  static constexpr size_t kKvBytes = size_t(kBlockN) * kDh * 2;  // one stage of K or of V
  static constexpr size_t kSmemBytes = kQBytes + 4 * kKvBytes + 1024;  // + slack to align the base to 1024
  static_assert(kDh == 64 || kDh == 128, "the Hopper forward covers dh 64 and 128");
  static_assert(kDh == 64 || kKeys == 128, "dh 128 with 64 keys would need more than 128 registers");
  static_assert(kBlockN == 64 || kBlockN == 128, "S = Q K^T is one wgmma of N = kBlockN");
};

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define BFM_ATTENTION_SM90_BODY 1
#endif

#ifdef BFM_ATTENTION_SM90_BODY

__device__ __forceinline__ int key_end(int i, int N, int causal_block) {
  return causal_block > 0 ? min(N, (i / causal_block + 1) * causal_block) : N;
}

#endif  // BFM_ATTENTION_SM90_BODY

template <int kDh, int kKeys>
__global__ void __launch_bounds__(WgmmaForwardTile<kDh, kKeys>::kThreads, WgmmaForwardTile<kDh, kKeys>::kMinBlocks)
    attention_forward_wgmma_kernel(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int N, int H,
                                   int causal_block, float scale_log2) {
#ifdef BFM_ATTENTION_SM90_BODY
  using Tile = WgmmaForwardTile<kDh, kKeys>;
  constexpr int kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN, kThreads = Tile::kThreads;
  constexpr int kKeyFrags = kBlockN / 8, kDhFrags = kDh / 8;
  // The swizzle is a function of address bits 4-9, so every tile starts on a 1024-byte boundary: the base is
  // rounded up at run time (kSmemBytes has the slack), not assumed from a declared alignment.
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t smem_base = (shared_address(smem_raw) + 1023u) & ~1023u;
  const uint32_t q_tile = smem_base;
  const uint32_t k_tiles = q_tile + uint32_t(Tile::kQBytes);       // [2 stages][kHalves][kBlockN][64]
  const uint32_t v_tiles = k_tiles + 2 * uint32_t(Tile::kKvBytes);  // [2 stages][kHalves][kBlockN][64]

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

  load_rows_sw128<kBlockM, kDh, kThreads>(q_tile, q_base, stride, r0, N);
  load_rows_sw128<kBlockN, kDh, kThreads>(k_tiles, k_base, stride, 0, N);
  load_rows_sw128<kBlockN, kDh, kThreads>(v_tiles, v_base, stride, 0, N);
  cp_async_commit();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warpgroup = threadIdx.x >> 7;
  const int g = lane >> 2, t = lane & 3;
  const int rows[2] = {r0 + warp * 16 + g, r0 + warp * 16 + g + 8};  // the two query rows this thread holds
  const int row_key_end[2] = {key_end(rows[0], N, causal_block), key_end(rows[1], N, causal_block)};
  // This warpgroup's 64 rows of Q (the A operand): row 64 * warpgroup of every sub-tile.
  const uint32_t q_rows = q_tile + uint32_t(warpgroup * 64 * 128);

  // Accumulators in the wgmma layout: element e of n8 fragment i at [4i + e] (rows g, g, g + 8, g + 8; columns
  // 8i + 2t, 8i + 2t + 1 twice). s: scores of this key tile; o: the output rows.
  float s[kBlockN / 2], o[kDh / 2];
#pragma unroll
  for (int i = 0; i < kBlockN / 2; ++i) s[i] = 0.0f;
#pragma unroll
  for (int i = 0; i < kDh / 2; ++i) o[i] = 0.0f;
  float row_max[2] = {kNegInf, kNegInf}, row_sum[2] = {0.0f, 0.0f};
  uint32_t p[kBlockN / 16][4];  // P in bf16, the A operand of O += P V, 16 keys per k-step

  for (int j = 0; j < n_key_tiles; ++j) {
    // Prefetch the next key tile into the other stage (last read in iteration j - 1, whose wgmma all completed
    // before its closing barrier), then wait for this one. A group is committed every iteration, empty or not,
    // so that wait_group 1 always means "everything but the newest prefetch has landed".
    if (j + 1 < n_key_tiles) {
      const uint32_t next = uint32_t((j + 1) & 1) * uint32_t(Tile::kKvBytes);
      load_rows_sw128<kBlockN, kDh, kThreads>(k_tiles + next, k_base, stride, (j + 1) * kBlockN, N);
      load_rows_sw128<kBlockN, kDh, kThreads>(v_tiles + next, v_base, stride, (j + 1) * kBlockN, N);
    }
    cp_async_commit();
    cp_async_wait<1>();
    fence_proxy_async_shared();  // this thread's landed copies, before wgmma (async proxy) reads them
    __syncthreads();
    const uint32_t k_tile = k_tiles + uint32_t(j & 1) * uint32_t(Tile::kKvBytes);
    const uint32_t v_tile = v_tiles + uint32_t(j & 1) * uint32_t(Tile::kKvBytes);

    // S = Q K^T (unscaled), dh / 16 k-steps; the first overwrites S (scale-d = 0).
    fence_registers(s);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kDh / 16; ++kk) {
      const uint32_t column = uint32_t((kk & 3) * 32);
      const uint64_t a = sw128_descriptor(q_rows + uint32_t((kk >> 2) * kBlockM * 128) + column, 16);
      const uint64_t kb = sw128_descriptor(k_tile + uint32_t((kk >> 2) * kBlockN * 128) + column, 16);
      if constexpr (kBlockN == 128) {
        wgmma_m64n128k16_ss(s, a, kb, kk > 0 ? 1 : 0);
      } else {
        wgmma_m64n64k16_ss(s, a, kb, kk > 0 ? 1 : 0);
      }
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_registers(s);

    // Keys past a row's key_end (future patches, or past N: zero rows in shared memory) get probability 0.
    const int c0 = j * kBlockN;
    if (c0 + kBlockN > shared_key_end) {
#pragma unroll
      for (int i = 0; i < kKeyFrags; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (c0 + i * 8 + 2 * t + (e & 1) >= row_key_end[e >> 1]) s[4 * i + e] = kNegInf;
    }

    // Online softmax, exactly as attention_forward_mma_kernel (attention.cu): the row max over the 4 lanes that
    // share a row, exponents in base 2 with the scale folded in, a row with everything so far masked measured
    // from 0; the row sum stays per thread until the end.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = kNegInf;
#pragma unroll
      for (int i = 0; i < kKeyFrags; ++i) mx = fmaxf(mx, fmaxf(s[4 * i + 2 * r], s[4 * i + 2 * r + 1]));
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
          const float pe = exp2f(fmaf(s[4 * i + 2 * r + e], scale_log2, -m_use));
          s[4 * i + 2 * r + e] = pe;
          sum += pe;
        }
      row_sum[r] = row_sum[r] * alpha + sum;
#pragma unroll
      for (int i = 0; i < kDhFrags; ++i) {
        o[4 * i + 2 * r] *= alpha;
        o[4 * i + 2 * r + 1] *= alpha;
      }
    }

    // P (rounded to bf16) straight from the S registers: the accumulator fragments 2kk, 2kk + 1 of a warp are
    // the m16n8k16 `a` layout of its 16 rows over keys 16kk .. 16kk + 15.
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      p[kk][0] = pack_bf16(s[8 * kk + 0], s[8 * kk + 1]);
      p[kk][1] = pack_bf16(s[8 * kk + 2], s[8 * kk + 3]);
      p[kk][2] = pack_bf16(s[8 * kk + 4], s[8 * kk + 5]);
      p[kk][3] = pack_bf16(s[8 * kk + 6], s[8 * kk + 7]);
    }

    // O += P V: per 16 keys, one m64n64k16 per 64 columns of dh (V sub-tile hh, rows 16kk ..).
    fence_registers(o);
    fence_registers(p);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk)
#pragma unroll
      for (int hh = 0; hh < Tile::kHalves; ++hh) {
        const uint64_t vb =
            sw128_descriptor(v_tile + uint32_t(hh * kBlockN * 128) + uint32_t(kk * 16 * 128), 1024);
        wgmma_m64n64k16_rs_tnspb(o + 32 * hh, p[kk], vb);
      }
    wgmma_commit();
    wgmma_wait<0>();
    fence_registers(o);
    fence_registers(p);
    __syncthreads();  // both warpgroups are done with stage j & 1 before iteration j + 1 refills it
  }

  // out = o / l, lse = m + ln l (in natural units). Every real row saw key 0, so l > 0.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = row_sum[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    if (rows[r] >= N) continue;
    const float inv_l = 1.0f / l;
    __nv_bfloat16* dst = out + (int64_t(b) * N + rows[r]) * D + h * kDh + 2 * t;
#pragma unroll
    for (int i = 0; i < kDhFrags; ++i)
      *reinterpret_cast<uint32_t*>(dst + i * 8) = pack_bf16(o[4 * i + 2 * r] * inv_l, o[4 * i + 2 * r + 1] * inv_l);
    if (t == 0) lse[int64_t(bh) * N + rows[r]] = (row_max[r] + log2f(l)) * kLn2;
  }
#else
  // Not an sm_90a pass: an empty stub that is never launched (see the top of the file).
  (void)out, (void)lse, (void)qkv, (void)N, (void)H, (void)causal_block, (void)scale_log2;
#endif
}

template <int kDh, int kKeys>
void launch(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int B, int N, int H, int causal_block,
            cudaStream_t stream) {
  using Tile = WgmmaForwardTile<kDh, kKeys>;
  const auto kernel = attention_forward_wgmma_kernel<kDh, kKeys>;
  detail::check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Tile::kSmemBytes)),
                "attention_forward (bf16 wgmma)");
  const int tiles = (N + Tile::kBlockM - 1) / Tile::kBlockM;
  require(tiles <= 65535, "attention_forward: N=", N, " gives ", tiles, " tiles of ", Tile::kBlockM,
          " rows, more than 65535");
  const float scale_log2 = kLog2e / sqrtf(float(kDh));
  kernel<<<dim3(unsigned(B * H), unsigned(tiles)), Tile::kThreads, Tile::kSmemBytes, stream>>>(out, lse, qkv, N, H,
                                                                                               causal_block,
                                                                                               scale_log2);
  detail::check_launch("attention_forward (bf16 wgmma, sm_90a)");
}

// Whether the current device can load this file's kernels: 0 unknown, 1 yes, 2 no; per device ordinal.
constexpr int kMaxDevices = 64;
std::atomic<int> g_image_state[kMaxDevices];

}  // namespace

void launch_forward_wgmma(bf16* out, float* lse, const bf16* qkv, int B, int N, int H, int dh, int causal_block,
                          int key_tile, cudaStream_t stream) {
  if (dh == 64 && (key_tile == 0 || key_tile == 64)) {
    launch<64, 64>(out, lse, qkv, B, N, H, causal_block, stream);
  } else if (dh == 64 && key_tile == 128) {
    launch<64, 128>(out, lse, qkv, B, N, H, causal_block, stream);
  } else if (dh == 128 && (key_tile == 0 || key_tile == 128)) {
    launch<128, 128>(out, lse, qkv, B, N, H, causal_block, stream);
  } else {
    bfm::fail("attention_forward (bf16 wgmma): no kernel for dh=", dh, " with key tiles of ", key_tile,
              " (dh 64: 64 or 128; dh 128: 128)");
  }
}

bool forward_wgmma_image_present() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) {
    cudaGetLastError();  // not sticky: clear it so that the next launch check does not report it
    return false;
  }
  int state = g_image_state[device].load(std::memory_order_relaxed);
  if (state == 0) {
    // The fatbinary holds sm_90a code alone (kernels/CMakeLists.txt), so the attributes can be read only where
    // that image loads: a device of compute capability 9.0. Every kernel of this file lives in the same image.
    cudaFuncAttributes attr{};
    const cudaError_t err = cudaFuncGetAttributes(&attr, attention_forward_wgmma_kernel<64, 64>);
    if (err != cudaSuccess) cudaGetLastError();
    state = err == cudaSuccess ? 1 : 2;
    g_image_state[device].store(state, std::memory_order_relaxed);
  }
  return state == 1;
}

}  // namespace bfm::kernels::cuda::attention_detail
