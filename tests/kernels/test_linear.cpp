// linear_forward / linear_backward against naive float64 loops and central finite differences.
#include "kernels/linear.h"

#include <gtest/gtest.h>

#include <vector>

#include "reference.h"
#include "base/error.h"

namespace {

using namespace bfm::test;
namespace cpu = bfm::kernels::cpu;

struct Shape {
  int M, in, out;
};

// y [M, out] = x [M, in] w^T + b, w [out, in]
std::vector<double> reference_forward(const std::vector<double>& x, const std::vector<double>& w,
                                      const std::vector<double>& b, const Shape& s) {
  std::vector<double> y(static_cast<size_t>(s.M) * s.out);
  for (int m = 0; m < s.M; ++m)
    for (int o = 0; o < s.out; ++o) {
      double acc = b.empty() ? 0.0 : b[o];
      for (int i = 0; i < s.in; ++i) acc += x[m * s.in + i] * w[o * s.in + i];
      y[m * s.out + o] = acc;
    }
  return y;
}

class LinearTest : public ::testing::TestWithParam<Shape> {
 protected:
  void SetUp() override {
    const Shape& s = GetParam();
    x = random_floats(static_cast<size_t>(s.M) * s.in, 1);
    w = random_floats(static_cast<size_t>(s.out) * s.in, 2);
    b = random_floats(s.out, 3);
    dy = random_floats(static_cast<size_t>(s.M) * s.out, 4);
  }
  std::vector<float> x, w, b, dy;
};

TEST_P(LinearTest, ForwardMatchesFloat64) {
  const Shape& s = GetParam();
  std::vector<float> y(static_cast<size_t>(s.M) * s.out, 7.0f);
  cpu::linear_forward(y.data(), x.data(), w.data(), b.data(), s.M, s.in, s.out);
  EXPECT_LT(rel_error(y, reference_forward(to_double(x), to_double(w), to_double(b), s)), 2e-6);
  cpu::linear_forward(y.data(), x.data(), w.data(), nullptr, s.M, s.in, s.out);
  EXPECT_LT(rel_error(y, reference_forward(to_double(x), to_double(w), {}, s)), 2e-6);
}

TEST_P(LinearTest, BackwardMatchesFloat64AndAddsIntoGradients) {
  const Shape& s = GetParam();
  // dx = dy w, dw = dy^T x, db = column sums of dy
  std::vector<double> want_dx(x.size(), 0.0), want_dw(w.size(), 0.0), want_db(b.size(), 0.0);
  for (int m = 0; m < s.M; ++m)
    for (int o = 0; o < s.out; ++o) {
      const double g = dy[m * s.out + o];
      want_db[o] += g;
      for (int i = 0; i < s.in; ++i) {
        want_dx[m * s.in + i] += g * w[o * s.in + i];
        want_dw[o * s.in + i] += g * x[m * s.in + i];
      }
    }
  const std::vector<float> dx0 = random_floats(x.size(), 11), dw0 = random_floats(w.size(), 12),
                           db0 = random_floats(b.size(), 13);
  std::vector<float> dx = dx0, dw = dw0, db = db0;
  cpu::linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), s.M, s.in, s.out);
  EXPECT_LT(rel_error_added(dx, dx0, want_dx), 1e-5);
  EXPECT_LT(rel_error_added(dw, dw0, want_dw), 1e-5);
  EXPECT_LT(rel_error_added(db, db0, want_db), 1e-5);

  // dx and db may be null: dw alone is still right.
  std::vector<float> dw_only = dw0;
  cpu::linear_backward(nullptr, dw_only.data(), nullptr, dy.data(), x.data(), w.data(), s.M, s.in, s.out);
  EXPECT_LT(rel_error_added(dw_only, dw0, want_dw), 1e-5);
}

TEST_P(LinearTest, BackwardMatchesFiniteDifferences) {
  const Shape& s = GetParam();
  std::vector<float> dx(x.size(), 0.0f), dw(w.size(), 0.0f), db(b.size(), 0.0f);
  cpu::linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), s.M, s.in, s.out);
  const std::vector<double> g = to_double(dy), xd = to_double(x), wd = to_double(w), bd = to_double(b);
  const auto idx_x = sample_indices(x.size(), 40, 1), idx_w = sample_indices(w.size(), 40, 2),
             idx_b = sample_indices(b.size(), 40, 3);
  EXPECT_LT(rel_error(pick(dx, idx_x), numeric_gradient(
                                           [&](const auto& v) { return project(g, reference_forward(v, wd, bd, s)); },
                                           xd, idx_x)),
            1e-5);
  EXPECT_LT(rel_error(pick(dw, idx_w), numeric_gradient(
                                           [&](const auto& v) { return project(g, reference_forward(xd, v, bd, s)); },
                                           wd, idx_w)),
            1e-5);
  EXPECT_LT(rel_error(pick(db, idx_b), numeric_gradient(
                                           [&](const auto& v) { return project(g, reference_forward(xd, wd, v, s)); },
                                           bd, idx_b)),
            1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest,
                         ::testing::Values(Shape{1, 8, 5}, Shape{37, 19, 23}, Shape{130, 64, 96}, Shape{3, 7, 130}));

TEST(LinearArgsTest, RejectsBadSizes) {
  float v = 0.0f;
  EXPECT_THROW(cpu::linear_forward(&v, &v, &v, &v, -1, 4, 4), bfm::Error);
  EXPECT_THROW(cpu::linear_backward(&v, &v, &v, &v, &v, &v, 4, 0, 4), bfm::Error);
}

}  // namespace
