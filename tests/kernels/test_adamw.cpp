// sum_of_squares and adamw_update against float64 loops of the formulas in adamw.h (PyTorch's AdamW order), and
// against values worked out by hand.
#include "kernels/adamw.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "reference.h"
#include "base/error.h"

namespace {

using namespace bfm::test;
namespace cpu = bfm::kernels::cpu;

TEST(AdamWTest, SumOfSquaresDoesNotDependOnThreadCount) {
  const std::vector<float> g = random_floats(100003, 2);
  double one = 0.0, three = 0.0;
  with_threads(1, [&] { one = cpu::sum_of_squares(g.data(), static_cast<int64_t>(g.size())); });
  with_threads(3, [&] { three = cpu::sum_of_squares(g.data(), static_cast<int64_t>(g.size())); });
  EXPECT_EQ(one, three);
}

TEST(AdamWTest, SumOfSquaresMatchesFloat64) {
  const std::vector<float> g = random_floats(100003, 1);  // several reduction chunks and a ragged end
  double want = 0.0;
  for (float x : g) want += static_cast<double>(x) * x;
  EXPECT_NEAR(cpu::sum_of_squares(g.data(), static_cast<int64_t>(g.size())), want, 1e-12 * want);
  EXPECT_EQ(cpu::sum_of_squares(g.data(), 0), 0.0);
}

struct Hyper {
  float lr = 3e-3f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.05f, grad_scale = 0.5f;
};

// The documented order, in float64.
void reference_step(std::vector<double>& p, std::vector<double>& m, std::vector<double>& v,
                    const std::vector<float>& grad, const Hyper& h, int step) {
  for (size_t i = 0; i < p.size(); ++i) {
    const double g = static_cast<double>(grad[i]) * h.grad_scale;
    m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * g;
    v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * g * g;
    p[i] *= 1.0 - static_cast<double>(h.lr) * h.weight_decay;
    const double m_hat = m[i] / (1.0 - std::pow(static_cast<double>(h.beta1), step));
    const double v_hat = v[i] / (1.0 - std::pow(static_cast<double>(h.beta2), step));
    p[i] -= h.lr * m_hat / (std::sqrt(v_hat) + h.eps);
  }
}

TEST(AdamWTest, ThreeStepsMatchFloat64) {
  const Hyper h;
  const size_t n = 1001;
  std::vector<float> p = random_floats(n, 1), m(n, 0.0f), v(n, 0.0f);
  std::vector<double> pd = to_double(p), md(n, 0.0), vd(n, 0.0);
  for (int step = 1; step <= 3; ++step) {
    const std::vector<float> grad = random_floats(n, 10 + step, -2.0f, 2.0f);
    cpu::adamw_update(p.data(), m.data(), v.data(), grad.data(), static_cast<int64_t>(n), h.lr, h.beta1, h.beta2,
                      h.eps, h.weight_decay, h.grad_scale, step);
    reference_step(pd, md, vd, grad, h, step);
  }
  EXPECT_LT(rel_error(p, pd), 1e-6);
  EXPECT_LT(rel_error(m, md), 1e-6);
  EXPECT_LT(rel_error(v, vd), 1e-6);
  // The parameters moved by about lr per step; check the move itself to 1e-4, not just the total.
  std::vector<float> moved(n);
  std::vector<double> moved_want(n);
  const std::vector<float> p0 = random_floats(n, 1);
  for (size_t i = 0; i < n; ++i) {
    moved[i] = p[i] - p0[i];
    moved_want[i] = pd[i] - p0[i];
  }
  EXPECT_LT(rel_error(moved, moved_want), 1e-4);
}

TEST(AdamWTest, FirstStepIsLearningRateTimesSign) {
  // Step 1: m_hat = g, v_hat = g^2, so p <- p (1 - lr wd) - lr g / (|g| + eps).
  float p[2] = {1.0f, -2.0f}, m[2] = {0.0f, 0.0f}, v[2] = {0.0f, 0.0f};
  const float grad[2] = {0.5f, -3.0f};
  cpu::adamw_update(p, m, v, grad, 2, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1.0f, 1);
  EXPECT_NEAR(p[0], 1.0 * (1.0 - 0.001) - 0.1, 1e-6);
  EXPECT_NEAR(p[1], -2.0 * (1.0 - 0.001) + 0.1, 1e-6);
  EXPECT_NEAR(m[0], 0.05, 1e-6 * 0.05);
  EXPECT_NEAR(v[1], 0.009, 2e-5 * 0.009);  // (1 - 0.999f) is 1e-3 to 1.3e-5 in float
}

TEST(AdamWTest, ZeroGradientOnlyDecays) {
  float p[1] = {2.0f}, m[1] = {0.0f}, v[1] = {0.0f};
  const float grad[1] = {0.0f};
  cpu::adamw_update(p, m, v, grad, 1, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, 1.0f, 5);
  EXPECT_FLOAT_EQ(p[0], 2.0f * (1.0f - 0.001f));
}

TEST(AdamWTest, RejectsStepZero) {
  float x = 0.0f;
  EXPECT_THROW(cpu::adamw_update(&x, &x, &x, &x, 1, 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f, 0), bfm::Error);
}

}  // namespace
