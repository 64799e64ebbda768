// Mean of the token vectors of each sample (the contrastive objective's pooled encoder output).
// One (sample, block of D columns) per iteration, summing the tokens in order in float64: deterministic whatever
// the thread count.
#include "kernels/mean_pool.h"

#include <algorithm>

#include "base/error.h"

namespace bfm::kernels::cpu {
namespace {
constexpr int kColumnBlock = 64;
}  // namespace

void mean_pool_forward(float* pooled, const float* x, int B, int n, int D) {
  require(B >= 0 && n > 0 && D > 0, "mean_pool_forward: bad sizes B=", B, " n=", n, " D=", D);
  const int n_blocks = (D + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static)
  for (int64_t task = 0; task < static_cast<int64_t>(B) * n_blocks; ++task) {
    const int64_t b = task / n_blocks;
    const int d0 = static_cast<int>(task % n_blocks) * kColumnBlock;
    const int nd = std::min(kColumnBlock, D - d0);
    double acc[kColumnBlock] = {};
    for (int i = 0; i < n; ++i) {
      const float* xr = x + (b * n + i) * D + d0;
      for (int d = 0; d < nd; ++d) acc[d] += xr[d];
    }
    for (int d = 0; d < nd; ++d) pooled[b * D + d0 + d] = static_cast<float>(acc[d] / n);
  }
}

void mean_pool_backward(float* dx, const float* dpooled, int B, int n, int D) {
  require(B >= 0 && n > 0 && D > 0, "mean_pool_backward: bad sizes B=", B, " n=", n, " D=", D);
  const float inv_n = 1.0f / static_cast<float>(n);
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < static_cast<int64_t>(B) * n; ++row) {
    const float* g = dpooled + (row / n) * D;
    float* dxr = dx + row * D;
    for (int d = 0; d < D; ++d) dxr[d] += g[d] * inv_n;
  }
}

}  // namespace bfm::kernels::cpu
