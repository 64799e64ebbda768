// Linear layer y = x W^T + b on the CPU: the matrix products go to OpenBLAS sgemm, the bias and its gradient are
// hand-written. PyTorch layout: w is [out, in].
//
// Threads: OpenBLAS's own threads spin while OpenMP's wait and the two fight over the cores (measured: a training
// step 40 % slower with both on 2 cores), so OpenBLAS runs single-threaded and the products are split over the
// OpenMP threads by hand: rows of y and dx, output rows of dw (each thread owns its slab: no reduction, the same
// result for a given thread count).
//
// db is a column sum over M rows. It is parallelised over blocks of output columns, each block summing all rows in
// order into float64 accumulators, so the result does not depend on the thread count.
#include "kernels/linear.h"

#include "kernels/cpu/sgemm.h"

#include <omp.h>

#include <algorithm>

#include "base/error.h"

namespace bfm::kernels::cpu {
namespace {

constexpr int kColumnBlock = 64;
constexpr int64_t kMinRowsPerThread = 32;

// Calls f(begin, end) on disjoint slabs of [0, n) over the OpenMP threads (one slab when n is small).
template <class F>
void over_slabs(int64_t n, int64_t min_per_thread, F f) {
  static const bool single_threaded_blas = [] {
#ifdef OPENBLAS_VERSION
    openblas_set_num_threads(1);
#endif
    return true;
  }();
  (void)single_threaded_blas;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(),
                                                                              n / min_per_thread)));
  if (threads == 1) {
    f(int64_t{0}, n);
    return;
  }
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int t = 0; t < threads; ++t) f(n * t / threads, n * (t + 1) / threads);
}

void check_sizes(const char* op, int64_t M, int in, int out) {
  require(M >= 0 && in > 0 && out > 0, op, ": bad sizes M=", M, " in=", in, " out=", out);
  require(M <= INT32_MAX, op, ": M=", M, " rows exceed what sgemm takes (int)");
}

}  // namespace

void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t M, int in, int out) {
  check_sizes("linear_forward", M, in, out);
  if (M == 0) return;
  // y [M, out] = x [M, in] * w^T, w [out, in]
  over_slabs(M, kMinRowsPerThread, [&](int64_t r0, int64_t r1) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(r1 - r0), out, in, 1.0f, x + r0 * in, in,
                w, in, 0.0f, y + r0 * out, out);
  });
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
  if (dx != nullptr)
    over_slabs(M, kMinRowsPerThread, [&](int64_t r0, int64_t r1) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(r1 - r0), in, out, 1.0f, dy + r0 * out,
                  out, w, in, 1.0f, dx + r0 * in, in);
    });
  // dw [out, in] += dy^T [out, M] * x [M, in], output rows split over the threads
  over_slabs(out, 8, [&](int64_t o0, int64_t o1) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(o1 - o0), in, m, 1.0f, dy + o0, out, x, in,
                1.0f, dw + o0 * in, in);
  });
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
