// tanh-GELU, elementwise over the cores; the oracle of kernels/cuda/gelu.cu (same formulas, same constants).
#include "kernels/gelu.h"

#include <cmath>

#include "runtime/error.h"

namespace bfm::kernels::cpu {
namespace {
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCoeff = 0.044715f;
}  // namespace

void gelu_forward(float* y, const float* x, int64_t n) {
  require(n >= 0, "gelu_forward: bad size n=", n);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float u = x[i];
    y[i] = 0.5f * u * (1.0f + std::tanh(kSqrt2OverPi * (u + kCoeff * u * u * u)));
  }
}

// d/du [0.5 u (1 + tanh a)] = 0.5 (1 + tanh a) + 0.5 u (1 - tanh^2 a) a',  a' = sqrt(2/pi) (1 + 3 * 0.044715 u^2)
void gelu_backward(float* dx, const float* dy, const float* x, int64_t n) {
  require(n >= 0, "gelu_backward: bad size n=", n);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float u = x[i];
    const float t = std::tanh(kSqrt2OverPi * (u + kCoeff * u * u * u));
    const float da = kSqrt2OverPi * (1.0f + 3.0f * kCoeff * u * u);
    dx[i] += dy[i] * (0.5f * (1.0f + t) + 0.5f * u * (1.0f - t * t) * da);
  }
}

}  // namespace bfm::kernels::cpu
