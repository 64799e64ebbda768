// Multi-head scaled dot-product attention over a fused qkv buffer, computed tile by tile with an online softmax
// so that no N x N score matrix is ever stored; only the per-row log-sum-exp is kept for backward.
//
// qkv [B, N, 3D] holds [q | k | v], each D = H * dh wide; head h uses columns h*dh .. (h+1)*dh - 1 of each.
// causal_block = 0: bidirectional (every token sees every token).
// causal_block = P > 0: time-causal over time-major tokens: query i sees keys k < (i / P + 1) * P, i.e. all
// parcels of its own and earlier time patches.
#pragma once
#include <cstdint>

namespace bfm::kernels::cpu {
// out [B, N, D] (overwritten; heads concatenated in order), lse [B, H, N] (natural log-sum-exp of scaled scores).
void attention_forward(float* out, float* lse, const float* qkv, int B, int N, int H, int dh, int causal_block);
// dout [B, N, D] -> dqkv [B, N, 3D] += ... Recomputes the scores from q, k and lse.
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out, const float* lse,
                        int B, int N, int H, int dh, int causal_block);
}  // namespace bfm::kernels::cpu

#ifdef BFM_WITH_CUDA
#include "kernels/cuda_types.h"
namespace bfm::kernels::cuda {
// Fused attention (kernels/cuda/attention.cu): the same contract as the CPU twin, qkv read in place from the fused
// [B, N, 3D] layout, out [B, N, D], lse [B, H, N] fp32. bf16 runs on tensor cores with fp32 softmax; float is the
// checking mode. Head dims 32, 64, 128; any N.
template <typename T>
void attention_forward(T* out, float* lse, const T* qkv, int B, int N, int H, int dh, int causal_block,
                       cudaStream_t stream);
// dqkv [B, N, 3D] += ... (recomputes the scores from q, k and lse; no atomics).
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse, int B, int N, int H,
                        int dh, int causal_block, cudaStream_t stream);
}  // namespace bfm::kernels::cuda
#endif
