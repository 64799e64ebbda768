// Linear layer y = x W^T + b, PyTorch weight layout [out, in]. The CPU path calls OpenBLAS sgemm.
#pragma once
#include <cstdint>

namespace bfm::kernels::cpu {
// x [M, in], w [out, in], b [out] (may be null) -> y [M, out] (overwritten).
void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t M, int in, int out);
// dy [M, out]: dx [M, in] += dy w; dw [out, in] += dy^T x; db [out] += column sums of dy. dx and db may be null;
// w is read only for dx (may be null when dx is).
void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     int64_t M, int in, int out);
}  // namespace bfm::kernels::cpu

#ifdef BFM_WITH_CUDA
#include "kernels/cuda_types.h"
namespace bfm::kernels::cuda {
// cuBLASLt GEMMs with fp32 accumulation (float mode: plain fp32, no TF32). x [M, in], w [out, in], b [out] (may be
// null; the same element type as w: the arena's mirror) -> y [M, out] (overwritten). With gelu_pre non-null the
// GELU (tanh) is fused as an epilogue: gelu_pre [M, out] receives x W^T + b and y receives gelu of it.
template <typename T>
void linear_forward(T* y, const T* x, const T* w, const T* b, int64_t M, int in, int out, cudaStream_t stream,
                    T* gelu_pre = nullptr);
// dy [M, out]: dx [M, in] += dy w (null: skipped; overwritten instead when accumulate_dx is false, which saves
// zeroing it); dw [out, in] += dy^T x (fp32; null: skipped); db [out] += column sums of dy (fp32, partial sums
// over row blocks reduced in a fixed order, so deterministic; null: skipped).
// With gelu_pre non-null (the pre-activation [M, in] saved by a GELU forward), dx is instead overwritten with
// gelu'(gelu_pre) * (dy w), the GELU's backward fused into the GEMM's epilogue (accumulate_dx must be false).
template <typename T>
void linear_backward(T* dx, float* dw, float* db, const T* dy, const T* x, const T* w, int64_t M, int in, int out,
                     cudaStream_t stream, bool accumulate_dx = true, const T* gelu_pre = nullptr);
// The cuBLASLt handle and workspace of bfm's GEMMs; created on first use, for the current device.
void linear_release();  // frees them (tests; process exit does it anyway)
}  // namespace bfm::kernels::cuda
#endif
