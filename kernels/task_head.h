// A linear task head on the pooled encoder output and its loss, fused (fine-tuning, MODEL_SPEC's `pooled` feature):
//   out = pooled W^T + b                      pooled [B, D], W [O, D], b [O], out [B, O]
//   classification: loss_r = -log softmax(out_r)[label_r]           (cross-entropy)
//   regression:     loss_r = mean over o of (out_ro - target_ro)^2  (targets standardised by the caller)
// Returns sum_r loss_r / norm (norm: e.g. the global batch, so that ranks' sums add up to the global mean), and with
// the output pointers non-null adds the gradient of that value: d_pooled [B, D] (overwritten), d_weight [O, D] and
// d_bias [O] (accumulated). Accumulates in float64 row by row: the head is small (O x D) and fine-tuning's numbers
// must not depend on a BLAS.
#pragma once
#include <cstdint>

namespace bfm::kernels::cpu {

struct TaskHeadGrads {
  float* d_pooled = nullptr;  // [B, D], overwritten
  float* d_weight = nullptr;  // [O, D], +=
  float* d_bias = nullptr;    // [O], +=
};

// labels [B] in [0, O); *correct (may be null) += rows whose arg-max is the label.
double task_head_cross_entropy(const float* pooled, const float* weight, const float* bias, const int32_t* labels,
                               int B, int D, int O, double norm, const TaskHeadGrads& grads, int64_t* correct);
// targets [B, O].
double task_head_mse(const float* pooled, const float* weight, const float* bias, const float* targets, int B, int D,
                     int O, double norm, const TaskHeadGrads& grads);

}  // namespace bfm::kernels::cpu
