// Residual stream add, out = a + b, elementwise over the cores. out may alias a (h = h + f(h)).
#include "kernels/residual.h"

#include "base/error.h"

namespace bfm::kernels::cpu {

void residual_forward(float* out, const float* a, const float* b, int64_t n) {
  require(n >= 0, "residual_forward: bad size n=", n);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

}  // namespace bfm::kernels::cpu
