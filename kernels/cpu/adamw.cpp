// AdamW as PyTorch's torch.optim.AdamW (non-fused, non-amsgrad) computes it, elementwise over the cores, and the
// sum of squares that global-norm gradient clipping needs.
#include "kernels/adamw.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "base/error.h"

namespace bfm::kernels::cpu {
namespace {
constexpr int64_t kChunk = 1 << 14;
}  // namespace

// Fixed chunks, each into its own float64 partial, added in chunk order: the same bits whatever the thread count.
double sum_of_squares(const float* g, int64_t n) {
  require(n >= 0, "sum_of_squares: bad size n=", n);
  const int64_t n_chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(n_chunks), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
    double acc = 0.0;
    const int64_t end = std::min(n, (chunk + 1) * kChunk);
    for (int64_t i = chunk * kChunk; i < end; ++i) acc += static_cast<double>(g[i]) * g[i];
    partial[chunk] = acc;
  }
  double sum = 0.0;
  for (double s : partial) sum += s;
  return sum;
}

void adamw_update(float* param, float* m, float* v, const float* grad, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, float grad_scale, int64_t step) {
  require(n >= 0, "adamw_update: bad size n=", n);
  require(step >= 1, "adamw_update: step=", step, " (steps count from 1)");
  // The bias corrections are Python floats (float64) in PyTorch; so here.
  const double bias_correction1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  const float step_size = static_cast<float>(lr / bias_correction1);
  const float bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  const float decay = 1.0f - lr * weight_decay;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] * grad_scale;
    m[i] = beta1 * m[i] + (1.0f - beta1) * g;
    v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
    param[i] *= decay;
    // p -= lr * m_hat / (sqrt(v_hat) + eps), written as PyTorch does: (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
    param[i] -= step_size * m[i] / (std::sqrt(v[i]) / bias_correction2_sqrt + eps);
  }
}

}  // namespace bfm::kernels::cpu
