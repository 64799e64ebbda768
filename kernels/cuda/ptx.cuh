// The inline PTX of the attention kernels, written once: attention.cu (mma.sync, every GPU from sm_80) and the
// Hopper forward and backward (attention_sm90.cu, attention_sm90_bwd.cu: warpgroup MMA, sm_90a only) include it.
// Each wrapper is one instruction (or one fixed group of them) with the operand layout it expects beside it; the
// PTX ISA (CUDA 13.0's, PTX ISA 9.0) is the reference, by section:
//   cp.async, cp.async.commit_group, cp.async.wait_group
//       Data Movement and Conversion Instructions: cp.async (non-bulk asynchronous copy, global -> shared)
//   ldmatrix, mma.sync.aligned.m16n8k16
//       Warp Level Matrix Multiply-Accumulate Instructions: ldmatrix; mma (Matrix Fragments for mma.m16n8k16)
//   fence.proxy.async
//       Parallel Synchronization and Communication Instructions: membar / fence (proxy fences); Memory
//       Consistency Model: Proxies (the async proxy through which wgmma reads shared memory)
//   wgmma.fence, wgmma.commit_group, wgmma.wait_group, wgmma.mma_async
//       Asynchronous Warpgroup Level Matrix Multiply-Accumulate Instructions (sm_90a): wgmma.mma_async and its
//       register fragments; Matrix Descriptor Format (Shared Memory Matrix Layout) for sw128_descriptor and
//       the 128-byte swizzle that load_rows_sw128 writes
// Device functions only, forced inline: a kernel that does not call a wrapper emits none of its PTX, so the sm_80
// and sm_90 passes of attention.cu never see the sm_90a instructions. The register constraints are part of the
// contract: "+f" accumulators are read and written by the instruction, and fence_registers keeps the compiler
// from moving their reads and writes across a wgmma fence, commit or wait.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace bfm::kernels::cuda::ptx {

// The 32-bit shared-state-space address of a generic pointer into shared memory (what cp.async, ldmatrix and the
// wgmma descriptors take).
__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---- cp.async: global -> shared without registers, in commit groups ----------------------------------------------

// Copies 16 bytes to shared address `dst`, or writes 16 zero bytes when !valid (src-size 0: nothing is read from src).
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
}
// The same for 4 bytes (.ca: 4 bytes may not bypass L1).
__device__ __forceinline__ void cp_async_4(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0)
               : "memory");
}
// The same two with the destination as a generic pointer into shared memory.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  cp_async_16(shared_address(dst), src, valid);
}
__device__ __forceinline__ void cp_async_4(void* dst, const void* src, bool valid) {
  cp_async_4(shared_address(dst), src, valid);
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most `kPending` of this thread's committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// ---- ldmatrix and mma.sync (warp-level tensor cores, sm_80 and later) --------------------------------------------

// Four 8x8 b16 matrices; lanes 8m .. 8m+7 give the row addresses of matrix m, and register m of lane l receives
// row l/4, columns 2(l%4), 2(l%4)+1 of matrix m (of its transpose with .trans).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}

// d [16 x 8] += a [16 x 16] b [16 x 8], bf16 in, fp32 accumulate. With g = lane / 4, t = lane % 4:
//   a: a0 (row g, cols 2t, 2t+1), a1 (row g+8, same cols), a2 (row g, cols 2t+8, 2t+9), a3 (row g+8, cols 2t+8..)
//   b: b0 (rows 2t, 2t+1, col g), b1 (rows 2t+8, 2t+9, col g)
//   d: d0, d1 (row g, cols 2t, 2t+1), d2, d3 (row g+8, cols 2t, 2t+1)
// So the accumulators of two neighbouring n8 tiles, packed to bf16, are exactly the `a` operand of the next
// product over those 16 columns (FlashAttention-2's register reuse of P and dS).
__device__ __forceinline__ void mma_bf16_16x8x16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as a bf16 pair, `lo` in the low half (the lower column of a fragment): how accumulators become the
// register `a` operand of mma.sync and of wgmma (RS).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// ---- Warpgroup MMA (sm_90a) ---------------------------------------------------------------------------------------

// Orders this thread's completed shared-memory writes (cp.async included) before later reads by the async proxy
// (wgmma operands); each writing thread fences, then a block barrier publishes.
__device__ __forceinline__ void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Keeps the compiler from moving reads or writes of wgmma operand registers across the fence / commit / wait
// instructions above (CUTLASS's warpgroup_fence_operand).
template <int kN>
__device__ __forceinline__ void fence_registers(float (&r)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int kN>
__device__ __forceinline__ void fence_registers(uint32_t (&r)[kN][4]) {
#pragma unroll
  for (int i = 0; i < kN; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(r[i][e])::"memory");
}

// Shared-memory matrix descriptor (64 bits) with the 128-byte swizzle: start address >> 4 in bits 0-13, leading
// byte offset >> 4 in bits 16-29, stride byte offset 1024 >> 4 in bits 32-45 (from one group of 8 rows to the
// next), base offset 0 in bits 49-51 (every 8-row atom is 1024-byte aligned), layout type 1 = 128B swizzle in bits
// 62-63. The callers' files say how their tiles are laid out and which LBO they pass.
__device__ __forceinline__ uint64_t sw128_descriptor(uint32_t address, uint32_t leading_byte_offset) {
  return uint64_t((address >> 4) & 0x3FFFu) | (uint64_t((leading_byte_offset >> 4) & 0x3FFFu) << 16) |
         (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}

// Rows row0 .. row0 + kRows - 1 of a [N, stride] bf16 matrix (kDh columns from `base`) into the 128B-swizzled tile
// that sw128_descriptor describes, at shared address `tile` (1024-byte aligned): dh / 64 sub-tiles [kRows][64],
// sub-tile h at tile + h * kRows * 128 bytes, rows of 128 bytes, the 16-byte chunk j of row r at chunk position
// j ^ (r % 8). Rows at or past N become zeros. Eight consecutive threads copy the 128 bytes of one row of one
// sub-tile; cp_async_commit and cp_async_wait are the caller's.
template <int kRows, int kDh, int kThreads>
__device__ __forceinline__ void load_rows_sw128(uint32_t tile, const __nv_bfloat16* base, int64_t stride, int row0,
                                                int N) {
  constexpr int kChunks = kDh / 8;  // 16-byte pieces per row
  static_assert((kRows * kChunks) % kThreads == 0, "every thread copies the same number of pieces");
  static_assert(kRows % 8 == 0, "sub-tiles are whole 8-row swizzle atoms");
#pragma unroll
  for (int it = 0; it < kRows * kChunks / kThreads; ++it) {
    const int c = it * kThreads + int(threadIdx.x);
    const int r = c / kChunks, chunk = c % kChunks;
    const int half = chunk >> 3, j = chunk & 7;
    const int row = row0 + r;
    const bool valid = row < N;
    const uint32_t dst = tile + uint32_t((half * kRows + r) * 128 + ((j ^ (r & 7)) << 4));
    cp_async_16(dst, base + (valid ? row : 0) * stride + chunk * 8, valid);
  }
}

#define BFM_PTX_F8(d, i)                                                                                      \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), \
      "+f"(d[i + 7])
#define BFM_PTX_F32(d, i) BFM_PTX_F8(d, i), BFM_PTX_F8(d, i + 8), BFM_PTX_F8(d, i + 16), BFM_PTX_F8(d, i + 24)

// d [64 x 64] (+)= A [64 x 16] B [16 x 64]; A and B from shared memory, both K-major (imm-trans-a = imm-trans-b =
// 0); accumulate = 0 overwrites d (scale-d false). The accumulator of lane l of warp w' of the warpgroup:
// d[4i + e] is row 16w' + l/4 (+ 8 for e >= 2), column 8i + 2(l%4) + e%2.
__device__ __forceinline__ void wgmma_m64n64k16_ss(float* d, uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, "
      "%23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : BFM_PTX_F32(d, 0)
      : "l"(a), "l"(b), "r"(accumulate));
}
// The same with N = 128 (64 accumulators per thread).
__device__ __forceinline__ void wgmma_m64n128k16_ss(float* d, uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, "
      "%23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, "
      "%44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, p, 1, 1, 0, 0;\n}\n"
      : BFM_PTX_F32(d, 0), BFM_PTX_F32(d, 32)
      : "l"(a), "l"(b), "r"(accumulate));
}
// d [64 x 64] += A [64 x 16] B [16 x 64]; A from registers in the m16n8k16 `a` layout of each warp's 16 rows
// (a0: row l/4, cols 2(l%4)..+1; a1: row l/4 + 8; a2: row l/4, cols 8 + 2(l%4)..; a3: row l/4 + 8, cols 8 + ..),
// B from shared memory MN-major (imm-trans-b = 1).
__device__ __forceinline__ void wgmma_m64n64k16_rs_tnspb(float* d, const uint32_t (&a)[4], uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, "
      "%23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : BFM_PTX_F32(d, 0)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}
#undef BFM_PTX_F32
#undef BFM_PTX_F8

}  // namespace bfm::kernels::cuda::ptx
