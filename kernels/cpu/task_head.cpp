#include "kernels/task_head.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace bfm::kernels::cpu {

namespace {

// out [O] = W pooled_r + b, in double.
void head_forward(const float* h, const float* weight, const float* bias, int D, int O, std::vector<double>& out) {
  for (int o = 0; o < O; ++o) {
    double s = bias[o];
    for (int j = 0; j < D; ++j) s += double(weight[int64_t(o) * D + j]) * h[j];
    out[size_t(o)] = s;
  }
}

// The gradient of a row from d_out [O] (already divided by norm).
void head_backward(const float* h, const float* weight, const std::vector<double>& d_out, int D, int O, int64_t r,
                   const TaskHeadGrads& g) {
  if (g.d_pooled) {
    float* dp = g.d_pooled + r * D;
    for (int j = 0; j < D; ++j) {
      double s = 0;
      for (int o = 0; o < O; ++o) s += d_out[size_t(o)] * weight[int64_t(o) * D + j];
      dp[j] = float(s);
    }
  }
  if (g.d_weight)
    for (int o = 0; o < O; ++o)
      for (int j = 0; j < D; ++j) g.d_weight[int64_t(o) * D + j] += float(d_out[size_t(o)] * h[j]);
  if (g.d_bias)
    for (int o = 0; o < O; ++o) g.d_bias[o] += float(d_out[size_t(o)]);
}

}  // namespace

double task_head_cross_entropy(const float* pooled, const float* weight, const float* bias, const int32_t* labels,
                               int B, int D, int O, double norm, const TaskHeadGrads& grads, int64_t* correct) {
  std::vector<double> out(static_cast<size_t>(O)), d_out(static_cast<size_t>(O));
  double loss = 0;
  for (int64_t r = 0; r < B; ++r) {
    const float* h = pooled + r * D;
    const int label = labels[r];
    head_forward(h, weight, bias, D, O, out);
    // log-sum-exp shifted by the maximum
    const double mx = *std::max_element(out.begin(), out.end());
    double z = 0;
    for (double v : out) z += std::exp(v - mx);
    loss += -(out[size_t(label)] - mx - std::log(z));
    if (correct) *correct += int(std::max_element(out.begin(), out.end()) - out.begin()) == label;
    for (int o = 0; o < O; ++o) d_out[size_t(o)] = (std::exp(out[size_t(o)] - mx) / z - (o == label)) / norm;
    head_backward(h, weight, d_out, D, O, r, grads);
  }
  return loss / norm;
}

double task_head_mse(const float* pooled, const float* weight, const float* bias, const float* targets, int B, int D,
                     int O, double norm, const TaskHeadGrads& grads) {
  std::vector<double> out(static_cast<size_t>(O)), d_out(static_cast<size_t>(O));
  double loss = 0;
  for (int64_t r = 0; r < B; ++r) {
    const float* h = pooled + r * D;
    head_forward(h, weight, bias, D, O, out);
    for (int o = 0; o < O; ++o) {
      const double diff = out[size_t(o)] - double(targets[r * O + o]);
      loss += diff * diff / O;
      d_out[size_t(o)] = 2 * diff / O / norm;
    }
    head_backward(h, weight, d_out, D, O, r, grads);
  }
  return loss / norm;
}

}  // namespace bfm::kernels::cpu
