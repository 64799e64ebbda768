// Linear layer y = x W^T + b on the CPU: the matrix products go to OpenBLAS sgemm, the bias and its gradient are
// hand-written. PyTorch layout: w is [out, in].
//
// db is a column sum over M rows. It is parallelised over blocks of output columns, each block summing all rows in
// order into float64 accumulators, so the result does not depend on the thread count.
#include "kernels/linear.h"

#include <cblas.h>

#include <algorithm>

#include "runtime/error.h"

namespace bfm::kernels::cpu {
namespace {

constexpr int kColumnBlock = 64;

void check_sizes(const char* op, int64_t M, int in, int out) {
  require(M >= 0 && in > 0 && out > 0, op, ": bad sizes M=", M, " in=", in, " out=", out);
  require(M <= INT32_MAX, op, ": M=", M, " rows exceed what sgemm takes (int)");
}

}  // namespace

void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t M, int in, int out) {
  check_sizes("linear_forward", M, in, out);
  if (M == 0) return;
  // y [M, out] = x [M, in] * w^T, w [out, in]
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M), out, in, 1.0f, x, in, w, in, 0.0f, y,
              out);
  if (b == nullptr) return;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < M; ++r) {
    float* yr = y + r * out;
    for (int o = 0; o < out; ++o) yr[o] += b[o];
  }
}

void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w, int64_t M,
                     int in, int out) {
  check_sizes("linear_backward", M, in, out);
  if (M == 0) return;
  const int m = static_cast<int>(M);
  // dx [M, in] += dy [M, out] * w [out, in]
  if (dx != nullptr) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, in, out, 1.0f, dy, out, w, in, 1.0f,
                                 dx, in);
  // dw [out, in] += dy^T [out, M] * x [M, in]
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, m, 1.0f, dy, out, x, in, 1.0f, dw, in);
  if (db == nullptr) return;
  const int n_blocks = (out + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static)
  for (int blk = 0; blk < n_blocks; ++blk) {
    const int c0 = blk * kColumnBlock;
    const int nc = std::min(kColumnBlock, out - c0);
    double acc[kColumnBlock] = {};
    for (int64_t r = 0; r < M; ++r) {
      const float* dyr = dy + r * out + c0;
      for (int c = 0; c < nc; ++c) acc[c] += dyr[c];
    }
    for (int c = 0; c < nc; ++c) db[c0 + c] += static_cast<float>(acc[c]);
  }
}

}  // namespace bfm::kernels::cpu
