// Private to the fused attention (kernels/cuda/attention.cu, attention_sm90.cu) and its test and benchmark: which
// bf16 forward kernel runs. Host declarations only, so g++ can include it (tests/kernels/test_cuda_attention.cpp,
// bench/bench_attention.cu).
//
// Two bf16 forwards compute the same function:
//   mma    the portable FlashAttention-2 style kernel (mma.sync m16n8k16), every head dim, every GPU from sm_80.
//   wgmma  the Hopper kernel (attention_sm90.cu: warpgroup MMA, sm_90a only), head dims 64 and 128, run only on a
//          device of compute capability 9.0 (H100, H200); its machine code exists for sm_90a alone.
// attention_forward<bf16> asks for kAuto: wgmma where it can run, else mma. The environment variable
// BFM_ATTENTION overrides kAuto, read at every call: "mma" forces the portable kernel, "wgmma" the Hopper one
// (bfm::Error where it cannot run: another GPU, or dh 32), "auto" or unset is the default.
// Backward has one implementation (mma.sync, three deterministic passes) whichever forward ran.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/cuda_types.h"

namespace bfm::kernels::cuda::attention_detail {

enum class ForwardVariant { kAuto, kMma, kWgmma };

// "mma" or "wgmma" (kAuto: "auto").
const char* variant_name(ForwardVariant v);

// True where the Hopper forward can run for head dim dh on the current device.
bool wgmma_forward_available(int dh);

// The variant a request resolves to for head dim dh on the current device: kAuto becomes BFM_ATTENTION's choice,
// or wgmma where available, else mma. Throws bfm::Error for wgmma where it cannot run, or a bad BFM_ATTENTION.
ForwardVariant resolve_forward_variant(ForwardVariant requested, int dh);

// attention_forward<bf16> with the variant chosen by the caller (kAuto: as attention_forward<bf16>).
// wgmma_key_tile picks the Hopper kernel's keys per tile where it has two (dh 64: 64, the default, or 128; dh 128:
// 128 only); 0 is the default. The tests run every kernel, the benchmark times them side by side.
void attention_forward_variant(ForwardVariant variant, bf16* out, float* lse, const bf16* qkv, int B, int N, int H,
                               int dh, int causal_block, cudaStream_t stream, int wgmma_key_tile = 0);

// attention_sm90.cu: the Hopper forward's launcher (dh 64 or 128; the caller checked sizes and availability), and
// whether this build holds its sm_90a machine code (its kernel attributes can be read on the current device).
void launch_forward_wgmma(bf16* out, float* lse, const bf16* qkv, int B, int N, int H, int dh, int causal_block,
                          int key_tile, cudaStream_t stream);
bool forward_wgmma_image_present();

}  // namespace bfm::kernels::cuda::attention_detail
