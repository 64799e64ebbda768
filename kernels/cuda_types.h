// Types shared by the CUDA twins' declarations. Included by every op header inside #ifdef BFM_WITH_CUDA, so host
// code compiled by g++ can call the kernels: cuda_runtime_api.h and cuda_bf16.h are plain host headers.
//
// Mixed precision: every activation and activation gradient has the element type T, float (the float32 mode used
// to check the GPU against the CPU) or bf16. Parameters read by elementwise ops (LayerNorm weights, embeddings)
// are the fp32 master copy; GEMMs read the bf16 (or float) mirror of the arena. Parameter gradients are fp32.
// Every function runs on the stream it is given and returns without synchronising; a failed launch throws
// bfm::Error naming the kernel. Backward functions add (+=) into their gradient outputs, as on the CPU.
#pragma once

#ifdef BFM_WITH_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace bfm::kernels::cuda {
using bf16 = __nv_bfloat16;
}  // namespace bfm::kernels::cuda
#endif
