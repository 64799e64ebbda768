// layernorm_forward / layernorm_backward against naive float64 loops and central finite differences.
#include "kernels/layernorm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "reference.h"
#include "base/error.h"

namespace {

using namespace bfm::test;
namespace cpu = bfm::kernels::cpu;

constexpr float kEps = 1e-5f;

struct Shape {
  int M, C;
};

struct Reference {
  std::vector<double> y, mean, rstd;
};

Reference reference_forward(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b,
                            const Shape& s) {
  Reference r{std::vector<double>(x.size()), std::vector<double>(s.M), std::vector<double>(s.M)};
  for (int m = 0; m < s.M; ++m) {
    double mu = 0.0;
    for (int c = 0; c < s.C; ++c) mu += x[m * s.C + c];
    mu /= s.C;
    double var = 0.0;
    for (int c = 0; c < s.C; ++c) var += (x[m * s.C + c] - mu) * (x[m * s.C + c] - mu);
    var /= s.C;  // biased
    const double rstd = 1.0 / std::sqrt(var + static_cast<double>(kEps));
    for (int c = 0; c < s.C; ++c) r.y[m * s.C + c] = (x[m * s.C + c] - mu) * rstd * w[c] + b[c];
    r.mean[m] = mu;
    r.rstd[m] = rstd;
  }
  return r;
}

class LayerNormTest : public ::testing::TestWithParam<Shape> {
 protected:
  void SetUp() override {
    const Shape& s = GetParam();
    x = random_floats(static_cast<size_t>(s.M) * s.C, 1);
    for (float& v : x) v = 3.0f + 2.0f * v;  // a mean far from 0 and a spread of 1 to 2
    w = random_floats(s.C, 2, 0.5f, 1.5f);
    b = random_floats(s.C, 3);
    dy = random_floats(x.size(), 4);
  }
  void forward(std::vector<float>& y, std::vector<float>& mean, std::vector<float>& rstd) const {
    const Shape& s = GetParam();
    y.assign(x.size(), 0.0f);
    mean.assign(s.M, 0.0f);
    rstd.assign(s.M, 0.0f);
    cpu::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), s.M, s.C, kEps);
  }
  std::vector<float> x, w, b, dy;
};

TEST_P(LayerNormTest, ForwardMatchesFloat64) {
  std::vector<float> y, mean, rstd;
  forward(y, mean, rstd);
  const Reference ref = reference_forward(to_double(x), to_double(w), to_double(b), GetParam());
  EXPECT_LT(rel_error(y, ref.y), 2e-6);
  EXPECT_LT(rel_error(mean, ref.mean), 1e-6);
  EXPECT_LT(rel_error(rstd, ref.rstd), 1e-6);
}

TEST_P(LayerNormTest, BackwardMatchesFloat64AndAddsIntoGradients) {
  const Shape& s = GetParam();
  std::vector<float> y, mean, rstd;
  forward(y, mean, rstd);
  const Reference ref = reference_forward(to_double(x), to_double(w), to_double(b), s);
  // With xhat = (x - mean) rstd: dw = sum_rows dy xhat, db = sum_rows dy,
  // dx = rstd (dy w - mean_c(dy w) - xhat mean_c(dy w xhat)).
  std::vector<double> want_dx(x.size()), want_dw(s.C, 0.0), want_db(s.C, 0.0);
  for (int m = 0; m < s.M; ++m) {
    double a = 0.0, bsum = 0.0;
    for (int c = 0; c < s.C; ++c) {
      const double xhat = (x[m * s.C + c] - ref.mean[m]) * ref.rstd[m];
      const double g = static_cast<double>(dy[m * s.C + c]) * w[c];
      a += g;
      bsum += g * xhat;
      want_dw[c] += dy[m * s.C + c] * xhat;
      want_db[c] += dy[m * s.C + c];
    }
    for (int c = 0; c < s.C; ++c) {
      const double xhat = (x[m * s.C + c] - ref.mean[m]) * ref.rstd[m];
      want_dx[m * s.C + c] =
          ref.rstd[m] * (static_cast<double>(dy[m * s.C + c]) * w[c] - a / s.C - xhat * bsum / s.C);
    }
  }
  const std::vector<float> dx0 = random_floats(x.size(), 5), dw0 = random_floats(s.C, 6), db0 = random_floats(s.C, 7);
  std::vector<float> dx = dx0, dw = dw0, db = db0;
  cpu::layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(), rstd.data(),
                          s.M, s.C);
  EXPECT_LT(rel_error_added(dx, dx0, want_dx), 1e-5);
  EXPECT_LT(rel_error_added(dw, dw0, want_dw), 1e-5);
  EXPECT_LT(rel_error_added(db, db0, want_db), 1e-5);
}

TEST_P(LayerNormTest, BackwardMatchesFiniteDifferences) {
  const Shape& s = GetParam();
  std::vector<float> y, mean, rstd;
  forward(y, mean, rstd);
  std::vector<float> dx(x.size(), 0.0f), dw(s.C, 0.0f), db(s.C, 0.0f);
  cpu::layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(), rstd.data(),
                          s.M, s.C);
  const std::vector<double> g = to_double(dy), xd = to_double(x), wd = to_double(w), bd = to_double(b);
  const auto idx_x = sample_indices(x.size(), 50, 1), idx_w = sample_indices(w.size(), 50, 2);
  const auto fx = [&](const auto& v) { return project(g, reference_forward(v, wd, bd, s).y); };
  const auto fw = [&](const auto& v) { return project(g, reference_forward(xd, v, bd, s).y); };
  const auto fb = [&](const auto& v) { return project(g, reference_forward(xd, wd, v, s).y); };
  EXPECT_LT(rel_error(pick(dx, idx_x), numeric_gradient(fx, xd, idx_x)), 2e-5);
  EXPECT_LT(rel_error(pick(dw, idx_w), numeric_gradient(fw, wd, idx_w)), 2e-5);
  EXPECT_LT(rel_error(pick(db, idx_w), numeric_gradient(fb, bd, idx_w)), 2e-5);
}

TEST(LayerNormDeterminismTest, WeightGradientsDoNotDependOnThreadCount) {
  const int M = 301, C = 130;
  const std::vector<float> x = random_floats(M * C, 1), w = random_floats(C, 2), b = random_floats(C, 3),
                           dy = random_floats(M * C, 4);
  std::vector<float> y(M * C), mean(M), rstd(M);
  cpu::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), M, C, kEps);
  std::vector<float> results[2];
  for (int threads : {1, 3}) {
    std::vector<float> dx(M * C, 0.0f), dw(C, 0.0f), db(C, 0.0f);
    with_threads(threads, [&] {
      cpu::layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(),
                              rstd.data(), M, C);
    });
    dw.insert(dw.end(), db.begin(), db.end());
    results[threads == 1 ? 0 : 1] = dw;
  }
  EXPECT_EQ(results[0], results[1]);
}

// C = 130 spans three column blocks of the weight-gradient reduction, C = 7 not even one.
INSTANTIATE_TEST_SUITE_P(Shapes, LayerNormTest,
                         ::testing::Values(Shape{13, 7}, Shape{130, 64}, Shape{5, 300}, Shape{70, 130}));

TEST(LayerNormArgsTest, RejectsBadSizes) {
  float v = 0.0f;
  EXPECT_THROW(cpu::layernorm_forward(&v, &v, &v, &v, &v, &v, 4, 0, kEps), bfm::Error);
  EXPECT_THROW(cpu::layernorm_backward(&v, &v, &v, &v, &v, &v, &v, &v, -1, 4), bfm::Error);
}

}  // namespace
