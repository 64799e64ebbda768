// gelu_forward / gelu_backward against the tanh formula in float64 and central finite differences.
#include "kernels/gelu.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "reference.h"

namespace {

using namespace bfm::test;
namespace cpu = bfm::kernels::cpu;

double gelu(double u) {
  return 0.5 * u * (1.0 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * (u + 0.044715 * u * u * u)));
}

TEST(GeluTest, ForwardMatchesFloat64) {
  const std::vector<float> x = random_floats(1001, 1, -6.0f, 6.0f);
  std::vector<float> y(x.size());
  cpu::gelu_forward(y.data(), x.data(), static_cast<int64_t>(x.size()));
  std::vector<double> want(x.size());
  for (size_t i = 0; i < x.size(); ++i) want[i] = gelu(x[i]);
  EXPECT_LT(rel_error(y, want), 1e-6);
  // Pointwise too, so that small outputs are checked: |error| <= 1e-6 |y| + 1e-7.
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], want[i], 1e-6 * std::abs(want[i]) + 1e-7) << x[i];
}

TEST(GeluTest, BackwardMatchesFiniteDifferencesAndAdds) {
  const std::vector<float> x = random_floats(1001, 2, -6.0f, 6.0f), dy = random_floats(1001, 3);
  const std::vector<float> dx0 = random_floats(x.size(), 4);
  std::vector<float> dx = dx0;
  cpu::gelu_backward(dx.data(), dy.data(), x.data(), static_cast<int64_t>(x.size()));
  // Elementwise, so the full finite-difference gradient of sum(dy * gelu(x)) is one difference per element.
  std::vector<double> want(x.size());
  const double h = 1e-5;
  for (size_t i = 0; i < x.size(); ++i) want[i] = dy[i] * (gelu(x[i] + h) - gelu(x[i] - h)) / (2.0 * h);
  EXPECT_LT(rel_error_added(dx, dx0, want), 1e-5);
}

TEST(GeluTest, KnownValues) {
  // The MODEL_SPEC formula at -3, -1, 0, 0.5, 2, evaluated in Python float64 (a guard on the formula above).
  const std::vector<float> x = {-3.0f, -1.0f, 0.0f, 0.5f, 2.0f};
  std::vector<float> y(x.size());
  cpu::gelu_forward(y.data(), x.data(), static_cast<int64_t>(x.size()));
  const double want[] = {-0.0036373920817729943, -0.15880800939172324, 0.0, 0.34571400982514394,
                         1.954597694087775};
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], want[i], 1e-6) << x[i];
}

}  // namespace
