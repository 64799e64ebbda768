// The Hopper (sm_90a, warpgroup MMA) bf16 attention BACKWARD (kernels/cuda/attention_sm90_bwd.cu). Host
// declarations only, so g++ can include it (tests/kernels/test_cuda_attention_sm90_bwd.cpp,
// bench/bench_attention_bwd.cu).
//
// attention_backward_sm90 has exactly the contract of cuda::attention_backward<bf16> (kernels/attention.h):
// dqkv [B, N, 3D] += the gradient of sum(dout * out) with respect to qkv, recomputing the scores from q, k and
// lse ([B, H, N], natural log-sum-exp of the scaled scores, scale 1/sqrt(dh)); bidirectional (causal_block 0) or
// time-causal (query i sees keys k < (i / P + 1) * P); any N; deterministic (three passes, one writer per
// gradient element, no atomics). Head dims 64 and 128 only, and only where attention_backward_sm90_available
// says so (a device of compute capability 9.0 and a build that holds the sm_90a machine code); elsewhere it
// throws bfm::Error instead of launching. qkv, dout and out must be 16-byte aligned.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/cuda_types.h"

namespace bfm::kernels::cuda::detail {

// True where the Hopper backward can run for head dim dh on the current device. The first call per device reads
// the kernels' attributes and launches a one-thread probe kernel (synchronously, on the legacy default stream) to
// confirm that the loaded image is the sm_90a one; later calls return the cached answer.
bool attention_backward_sm90_available(int dh);

void attention_backward_sm90(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B,
                             int N, int H, int dh, int causal_block, cudaStream_t stream);

}  // namespace bfm::kernels::cuda::detail
