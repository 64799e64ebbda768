// io/run_preprocess against closed forms: a line is detrended to zero and an orthogonal pattern survives it,
// z-score and robust scaling of hand-computed columns, linear resampling of a linear signal is exact.
#include "io/run_preprocess.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

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

}  // namespace
