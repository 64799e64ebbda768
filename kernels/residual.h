// Residual stream add: out = a + b (out may alias a).
#pragma once
#include <cstdint>

namespace bfm::kernels::cpu {
void residual_forward(float* out, const float* a, const float* b, int64_t n);
}  // namespace bfm::kernels::cpu
