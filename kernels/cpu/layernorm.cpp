// LayerNorm over the last dimension, y = (x - mean) * rstd * w + b, with biased variance (MODEL_SPEC).
// Rows are independent, so forward and dx run one row per iteration over the cores. Row statistics accumulate in
// float64 so that wide rows with a large mean do not lose the variance.
//
// dw and db are sums over all M rows. They are parallelised over blocks of columns, each block walking the rows in
// order into float64 accumulators: the result is the same bit for bit whatever the thread count.
#include "kernels/layernorm.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"

namespace bfm::kernels::cpu {
namespace {
constexpr int kColumnBlock = 64;
}  // namespace

void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b,
                       int64_t M, int C, float eps) {
  require(M >= 0 && C > 0, "layernorm_forward: bad sizes M=", M, " C=", C);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < M; ++r) {
    const float* xr = x + r * C;
    double sum = 0.0;
    for (int c = 0; c < C; ++c) sum += xr[c];
    const double mu = sum / C;
    double sq = 0.0;
    for (int c = 0; c < C; ++c) {
      const double d = xr[c] - mu;
      sq += d * d;
    }
    const float m = static_cast<float>(mu);
    const float s = static_cast<float>(1.0 / std::sqrt(sq / C + eps));
    float* yr = y + r * C;
    for (int c = 0; c < C; ++c) yr[c] = (xr[c] - m) * s * w[c] + b[c];
    mean[r] = m;
    rstd[r] = s;
  }
}

void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                        const float* mean, const float* rstd, int64_t M, int C) {
  require(M >= 0 && C > 0, "layernorm_backward: bad sizes M=", M, " C=", C);
  // dx: with xhat = (x - mean) rstd and g = dy * w,
  //   dx = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat)).
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < M; ++r) {
    const float* xr = x + r * C;
    const float* dyr = dy + r * C;
    const float m = mean[r];
    const float s = rstd[r];
    double sum_g = 0.0;
    double sum_gx = 0.0;
    for (int c = 0; c < C; ++c) {
      const float g = dyr[c] * w[c];
      sum_g += g;
      sum_gx += static_cast<double>(g) * ((xr[c] - m) * s);
    }
    const float mean_g = static_cast<float>(sum_g / C);
    const float mean_gx = static_cast<float>(sum_gx / C);
    float* dxr = dx + r * C;
    for (int c = 0; c < C; ++c) {
      const float xhat = (xr[c] - m) * s;
      dxr[c] += s * (dyr[c] * w[c] - mean_g - xhat * mean_gx);
    }
  }
  if (dw == nullptr && db == nullptr) return;
  const int n_blocks = (C + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static)
  for (int blk = 0; blk < n_blocks; ++blk) {
    const int c0 = blk * kColumnBlock;
    const int nc = std::min(kColumnBlock, C - c0);
    double acc_w[kColumnBlock] = {};
    double acc_b[kColumnBlock] = {};
    for (int64_t r = 0; r < M; ++r) {
      const float* xr = x + r * C + c0;
      const float* dyr = dy + r * C + c0;
      const float m = mean[r];
      const float s = rstd[r];
      for (int c = 0; c < nc; ++c) {
        acc_w[c] += static_cast<double>(dyr[c]) * ((xr[c] - m) * s);
        acc_b[c] += dyr[c];
      }
    }
    for (int c = 0; c < nc; ++c) {
      if (dw != nullptr) dw[c0 + c] += static_cast<float>(acc_w[c]);
      if (db != nullptr) db[c0 + c] += static_cast<float>(acc_b[c]);
    }
  }
}

}  // namespace bfm::kernels::cpu
