// io/run_preprocess against closed forms: a line is detrended to zero and an orthogonal pattern survives it,
// z-score and robust scaling of hand-computed columns, linear resampling of a linear signal is exact, the confound
// regression leaves the least squares residual, scrubbing drops rows.
#include "io/run_preprocess.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "base/error.h"

namespace {

using bfm::io::RunScaling;

TEST(RunPreprocess, DetrendRemovesALineAndKeepsWhatIsOrthogonalToIt) {
  const int64_t T = 9, P = 2;
  std::vector<double> x(T * P);
  // column 0: 3 + 0.5 t; column 1: -2 t + (t - 4)^2 - mean((t - 4)^2) (a parabola symmetric about the centre has no
  // linear part, so only it remains).
  std::vector<double> parabola(T);
  double pm = 0;
  for (int64_t t = 0; t < T; ++t) pm += (t - 4.0) * (t - 4.0) / T;
  for (int64_t t = 0; t < T; ++t) {
    x[t * P] = 3 + 0.5 * t;
    parabola[t] = (t - 4.0) * (t - 4.0) - pm;
    x[t * P + 1] = -2.0 * t + 7 + parabola[t];
  }
  bfm::io::detrend_linear(x, T, P);
  for (int64_t t = 0; t < T; ++t) {
    EXPECT_NEAR(x[t * P], 0, 1e-12);
    EXPECT_NEAR(x[t * P + 1], parabola[t], 1e-12);
  }
}

TEST(RunPreprocess, ZscoreUsesThePopulationStd) {
  std::vector<double> x = {1, 2, 3, 4};  // mean 2.5, std sqrt(1.25)
  bfm::io::scale_columns(x, 4, 1, RunScaling::zscore);
  const double s = std::sqrt(1.25);
  EXPECT_NEAR(x[0], -1.5 / s, 1e-12);
  EXPECT_NEAR(x[3], 1.5 / s, 1e-12);
}

TEST(RunPreprocess, RobustScalingUsesMedianAndNormalConsistentIqr) {
  std::vector<double> x = {10, 1, 2, 3, 4};  // sorted 1 2 3 4 10: median 3, q25 2, q75 4 (numpy 'linear')
  bfm::io::scale_columns(x, 5, 1, RunScaling::robust);
  EXPECT_NEAR(x[0], (10 - 3) / (2 / 1.349), 1e-12);
  EXPECT_NEAR(x[1], (1 - 3) / (2 / 1.349), 1e-12);
}

TEST(RunPreprocess, ConstantColumnBecomesZeros) {
  std::vector<double> x = {5, 1, 5, 2, 5, 3};  // column 0 constant
  bfm::io::scale_columns(x, 3, 2, RunScaling::zscore);
  EXPECT_EQ(x[0], 0);
  EXPECT_EQ(x[4], 0);
  EXPECT_NEAR(x[5], std::sqrt(1.5), 1e-12);  // (3 - 2) / sqrt(2/3)
}

TEST(RunPreprocess, LinearResamplingIsExactOnALineAndStopsAtTheLastSample) {
  const int64_t T = 11;  // t = 0 .. 10 s at TR 1.0
  std::vector<double> x(T);
  for (int64_t t = 0; t < T; ++t) x[t] = 2.0 * t - 1;
  int64_t K = 0;
  const std::vector<double> y = bfm::io::resample_linear(x, T, 1, 1.0, 0.75, K);
  ASSERT_EQ(K, 14);  // 0, 0.75, ..., 9.75
  for (int64_t k = 0; k < K; ++k) EXPECT_NEAR(y[k], 2.0 * (0.75 * k) - 1, 1e-12);
  const std::vector<double> z = bfm::io::resample_linear(x, T, 1, 1.0, 2.5, K);
  ASSERT_EQ(K, 5);  // 0, 2.5, 5, 7.5, 10
  EXPECT_NEAR(z[4], 19, 1e-12);
}

// The least squares residual r of x on a design D is the one with D^T r = 0 and x - r in D's span: checked by both
// properties, on a design with a repeated and a zero column (rank deficient), as --confounds may give.
TEST(RunPreprocess, RegressOutLeavesTheLeastSquaresResidualEvenWhenRankDeficient) {
  const int64_t T = 30, D = 5;
  std::vector<double> design(T * D), x(T * 2);
  for (int64_t t = 0; t < T; ++t) {
    const double c = std::sin(0.7 * t), e = std::cos(1.3 * t * t);
    design[t * D + 0] = c;
    design[t * D + 1] = c;    // repeated
    design[t * D + 2] = 0;    // e.g. an all-n/a derivative column
    design[t * D + 3] = 1;
    design[t * D + 4] = t;
    x[t * 2 + 0] = 3 * c + 5 - 0.2 * t;       // in the span: residual 0
    x[t * 2 + 1] = 3 * c + 5 - 0.2 * t + e;   // not in it
  }
  std::vector<double> r = x;
  bfm::io::regress_out(r, T, 2, design, D);
  for (int64_t t = 0; t < T; ++t) EXPECT_NEAR(r[t * 2], 0, 1e-10);
  for (int64_t d = 0; d < D; ++d) {
    double dot = 0;
    for (int64_t t = 0; t < T; ++t) dot += design[t * D + d] * r[t * 2 + 1];
    EXPECT_NEAR(dot, 0, 1e-9) << "column " << d;
  }
  // x - r in the span of {c, 1, t}: solve the 3 x 3 normal equations by hand on x - r and check the fit is exact.
  double s[3][4] = {};
  for (int64_t t = 0; t < T; ++t) {
    const double v[3] = {design[t * D], 1.0, static_cast<double>(t)};
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 3; ++j) s[i][j] += v[i] * v[j];
      s[i][3] += v[i] * (x[t * 2 + 1] - r[t * 2 + 1]);
    }
  }
  for (int i = 0; i < 3; ++i)  // Gauss-Jordan
    for (int k = 0; k < 3; ++k)
      if (k != i) {
        const double f = s[k][i] / s[i][i];
        for (int j = 0; j < 4; ++j) s[k][j] -= f * s[i][j];
      }
  const double b[3] = {s[0][3] / s[0][0], s[1][3] / s[1][1], s[2][3] / s[2][2]};
  for (int64_t t = 0; t < T; ++t)
    EXPECT_NEAR(b[0] * design[t * D] + b[1] + b[2] * t, x[t * 2 + 1] - r[t * 2 + 1], 1e-9);
}

// Scrubbing drops rows before the fit; the line is over the kept rows' own indices, so a run that is a pure line is
// removed exactly even with a gap.
TEST(RunPreprocess, ScrubbingDropsRowsAndDetrendsOverTheirAcquisitionIndices) {
  const int64_t T0 = 10;
  std::vector<double> x(T0);
  for (int64_t t = 0; t < T0; ++t) x[t] = 2.0 + 0.5 * t;
  x[3] = 100;  // a spike on a dropped volume
  bfm::io::RunPreprocess options;
  options.scaling = RunScaling::none;
  options.keep = {1, 1, 1, 0, 1, 1, 1, 1, 1, 1};
  int64_t T = T0;
  bfm::io::preprocess_run(x, T, 1, 2.0, options);
  ASSERT_EQ(T, 9);
  for (int64_t t = 0; t < T; ++t) EXPECT_NEAR(x[t], 0, 1e-12);
  options.target_tr = 1.0;
  std::vector<double> y(T0, 1.0);
  T = T0;
  EXPECT_THROW(bfm::io::preprocess_run(y, T, 1, 2.0, options), bfm::Error);
}

}  // namespace
