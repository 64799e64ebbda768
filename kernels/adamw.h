// AdamW (decoupled weight decay, bias-corrected moments) and the global gradient norm used for clipping.
#pragma once
#include <cstdint>

namespace bfm::kernels::cpu {
// sum of g[i]^2 in float64 (global-norm clipping sums this over every gradient tensor, then takes sqrt).
double sum_of_squares(const float* g, int64_t n);
// One step, in PyTorch's order: g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p *= 1 - lr * weight_decay; p -= lr * (m / (1 - b1^step)) / (sqrt(v / (1 - b2^step)) + eps). step counts from 1.
void adamw_update(float* param, float* m, float* v, const float* grad, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, float grad_scale, int64_t step);
}  // namespace bfm::kernels::cpu
