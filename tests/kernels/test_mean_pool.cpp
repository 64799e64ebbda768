// mean_pool_forward / mean_pool_backward against float64 loops and central finite differences.
#include "kernels/mean_pool.h"

#include <gtest/gtest.h>

#include <vector>

#include "reference.h"

namespace {

using namespace bfm::test;
namespace cpu = bfm::kernels::cpu;

struct Shape {
  int B, n, D;
};

std::vector<double> reference_forward(const std::vector<double>& x, const Shape& s) {
  std::vector<double> pooled(static_cast<size_t>(s.B) * s.D, 0.0);
  for (int b = 0; b < s.B; ++b)
    for (int i = 0; i < s.n; ++i)
      for (int d = 0; d < s.D; ++d) pooled[b * s.D + d] += x[(b * s.n + i) * s.D + d] / s.n;
  return pooled;
}

class MeanPoolTest : public ::testing::TestWithParam<Shape> {};

TEST_P(MeanPoolTest, ForwardMatchesFloat64) {
  const Shape& s = GetParam();
  const std::vector<float> x = random_floats(static_cast<size_t>(s.B) * s.n * s.D, 1);
  std::vector<float> pooled(static_cast<size_t>(s.B) * s.D, 4.0f);
  cpu::mean_pool_forward(pooled.data(), x.data(), s.B, s.n, s.D);
  EXPECT_LT(rel_error(pooled, reference_forward(to_double(x), s)), 1e-6);
}

TEST_P(MeanPoolTest, BackwardMatchesFiniteDifferencesAndAdds) {
  const Shape& s = GetParam();
  const std::vector<float> x = random_floats(static_cast<size_t>(s.B) * s.n * s.D, 1);
  const std::vector<float> dpooled = random_floats(static_cast<size_t>(s.B) * s.D, 2);
  std::vector<double> want(x.size());
  for (int b = 0; b < s.B; ++b)
    for (int i = 0; i < s.n; ++i)
      for (int d = 0; d < s.D; ++d) want[(b * s.n + i) * s.D + d] = static_cast<double>(dpooled[b * s.D + d]) / s.n;
  const std::vector<float> dx0 = prefill_for(want, 3);
  std::vector<float> dx = dx0;
  cpu::mean_pool_backward(dx.data(), dpooled.data(), s.B, s.n, s.D);
  EXPECT_LT(rel_error_added(dx, dx0, want), 1e-6);

  std::vector<float> fresh(x.size(), 0.0f);
  cpu::mean_pool_backward(fresh.data(), dpooled.data(), s.B, s.n, s.D);
  const auto idx = sample_indices(x.size(), 40, 4);
  const auto f = [&](const std::vector<double>& v) { return project(to_double(dpooled), reference_forward(v, s)); };
  EXPECT_LT(rel_error(pick(fresh, idx), numeric_gradient(f, to_double(x), idx)), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Shapes, MeanPoolTest, ::testing::Values(Shape{1, 35, 8}, Shape{3, 197, 70}, Shape{2, 1, 130}));

}  // namespace
