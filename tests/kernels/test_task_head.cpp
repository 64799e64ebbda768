// The fused task head (kernels/task_head.h: linear map of the pooled features, then cross-entropy or mean squared
// error, divided by norm) against a float64 reference written here in the textbook form (log of the sum of
// exponentials, no shift) and its gradients against central finite differences of that reference.
#include "kernels/task_head.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "reference.h"

namespace {

using namespace bfm::test;
namespace cpu = bfm::kernels::cpu;

constexpr int kB = 5, kD = 7, kO = 4;
constexpr double kNorm = 8.0;

// x = [pooled (B D) | weight (O D) | bias (O)] in float64.
std::vector<double> outputs(const std::vector<double>& x, int r) {
  std::vector<double> out(kO);
  for (int o = 0; o < kO; ++o) {
    out[o] = x[kB * kD + kO * kD + o];
    for (int j = 0; j < kD; ++j) out[o] += x[kB * kD + o * kD + j] * x[r * kD + j];
  }
  return out;
}

double reference_ce(const std::vector<double>& x, const std::vector<int32_t>& labels) {
  double loss = 0;
  for (int r = 0; r < kB; ++r) {
    const std::vector<double> out = outputs(x, r);
    double z = 0;
    for (double v : out) z += std::exp(v);
    loss += std::log(z) - out[labels[r]];
  }
  return loss / kNorm;
}

double reference_mse(const std::vector<double>& x, const std::vector<float>& targets) {
  double loss = 0;
  for (int r = 0; r < kB; ++r) {
    const std::vector<double> out = outputs(x, r);
    for (int o = 0; o < kO; ++o) loss += std::pow(out[o] - targets[r * kO + o], 2) / kO;
  }
  return loss / kNorm;
}

struct Inputs {
  std::vector<float> pooled = random_floats(kB * kD, 11), weight = random_floats(kO * kD, 12, -0.8f, 0.8f),
                     bias = random_floats(kO, 13), targets = random_floats(kB * kO, 14, -2.0f, 2.0f);
  std::vector<int32_t> labels = {0, 3, 1, 1, 2};
  std::vector<double> x() const {
    std::vector<double> v(pooled.begin(), pooled.end());
    v.insert(v.end(), weight.begin(), weight.end());
    v.insert(v.end(), bias.begin(), bias.end());
    return v;
  }
};

// Runs the kernel; returns its loss and the gradient [d_pooled | d_weight | d_bias] (the head's added onto 0.5).
template <class Run>
double with_grads(Run run, std::vector<float>& grad) {
  std::vector<float> dp(kB * kD, -9.0f), dw(kO * kD, 0.5f), db(kO, 0.5f);
  const double loss = run(cpu::TaskHeadGrads{dp.data(), dw.data(), db.data()});
  grad = dp;
  for (float v : dw) grad.push_back(v - 0.5f);
  for (float v : db) grad.push_back(v - 0.5f);
  return loss;
}

TEST(TaskHead, CrossEntropyMatchesTheReferenceAndItsGradient) {
  const Inputs in;
  int64_t correct = 0;
  std::vector<float> grad;
  const double loss = with_grads(
      [&](const cpu::TaskHeadGrads& g) {
        return cpu::task_head_cross_entropy(in.pooled.data(), in.weight.data(), in.bias.data(), in.labels.data(), kB,
                                            kD, kO, kNorm, g, &correct);
      },
      grad);
  EXPECT_NEAR(loss, reference_ce(in.x(), in.labels), 1e-12);
  int64_t want_correct = 0;
  for (int r = 0; r < kB; ++r) {
    const std::vector<double> out = outputs(in.x(), r);
    want_correct += int(std::max_element(out.begin(), out.end()) - out.begin()) == in.labels[r];
  }
  EXPECT_EQ(correct, want_correct);
  std::vector<size_t> all(grad.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  const auto numeric = numeric_gradient([&](const std::vector<double>& x) { return reference_ce(x, in.labels); },
                                        in.x(), all);
  EXPECT_LT(rel_error(grad, numeric), 1e-5);
  // Without gradient outputs the loss is the same and nothing is written.
  EXPECT_EQ(cpu::task_head_cross_entropy(in.pooled.data(), in.weight.data(), in.bias.data(), in.labels.data(), kB, kD,
                                         kO, kNorm, {}, nullptr),
            loss);
}

TEST(TaskHead, MeanSquaredErrorMatchesTheReferenceAndItsGradient) {
  const Inputs in;
  std::vector<float> grad;
  const double loss = with_grads(
      [&](const cpu::TaskHeadGrads& g) {
        return cpu::task_head_mse(in.pooled.data(), in.weight.data(), in.bias.data(), in.targets.data(), kB, kD, kO,
                                  kNorm, g);
      },
      grad);
  EXPECT_NEAR(loss, reference_mse(in.x(), in.targets), 1e-12);
  std::vector<size_t> all(grad.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  const auto numeric = numeric_gradient([&](const std::vector<double>& x) { return reference_mse(x, in.targets); },
                                        in.x(), all);
  EXPECT_LT(rel_error(grad, numeric), 1e-5);
}

}  // namespace
