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
