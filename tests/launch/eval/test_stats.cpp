// The statistics of bfm eval against independent computations: metrics on hand-worked cases (the values scikit-learn
// gives for them), ridge against the closed-form normal equations solved by Gaussian elimination in long double, the
// splitter's guarantees (no group in two folds, no training window overlapping a test window), Student's t quantiles
// against closed forms and printed tables, the eigen-decomposition and the PCA basis against their definitions
// (A v = lambda v) with the covariance summed naively in long double.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "launch/eval/features.h"
#include "launch/eval/population_ridge.h"
#include "launch/eval/stats.h"
#include "launch/eval/summary.h"
#include "base/rng.h"

namespace {

using namespace bfm::launch::eval;

TEST(EvalMetrics, AccuracyAndBalancedAccuracy) {
  const std::vector<int> truth = {0, 0, 0, 0, 1, 1, 2, 2, 2, 2};
  const std::vector<int> pred = {0, 0, 1, 2, 1, 0, 2, 2, 2, 0};
  EXPECT_DOUBLE_EQ(accuracy(truth, pred), 0.6);
  // recalls: class 0 2/4, class 1 1/2, class 2 3/4 -> mean 0.5833...
  EXPECT_NEAR(balanced_accuracy(truth, pred), (0.5 + 0.5 + 0.75) / 3, 1e-15);
  EXPECT_TRUE(std::isnan(accuracy({}, {})));
}

TEST(EvalMetrics, AucCountsTiesAsHalf) {
  // sklearn.metrics.roc_auc_score([0,0,1,1,0,1], [0.1,0.4,0.35,0.8,0.8,0.9]) = 0.7222... (6.5 of 9 pairs)
  EXPECT_NEAR(auc({0, 0, 1, 1, 0, 1}, {0.1, 0.4, 0.35, 0.8, 0.8, 0.9}), 6.5 / 9.0, 1e-15);
  EXPECT_DOUBLE_EQ(auc({0, 1}, {0.2, 0.7}), 1.0);
  EXPECT_DOUBLE_EQ(auc({1, 0}, {0.2, 0.7}), 0.0);
  EXPECT_TRUE(std::isnan(auc({1, 1}, {0.2, 0.7})));
  // Brute force over all positive-negative pairs on random scores with ties.
  bfm::Rng rng(5);
  std::vector<int> pos;
  std::vector<double> s;
  for (int i = 0; i < 200; ++i) {
    pos.push_back(rng.uniform() < 0.3);
    s.push_back(std::floor(rng.uniform() * 20));
  }
  double wins = 0, pairs = 0;
  for (int i = 0; i < 200; ++i)
    for (int j = 0; j < 200; ++j)
      if (pos[i] && !pos[j]) {
        pairs += 1;
        wins += s[i] > s[j] ? 1 : s[i] == s[j] ? 0.5 : 0;
      }
  EXPECT_NEAR(auc(pos, s), wins / pairs, 1e-12);
}

TEST(EvalMetrics, AucOneVsRestAveragesClasses) {
  const std::vector<int> truth = {0, 1, 2, 0, 1, 2};
  std::vector<double> scores = {0.9, 0.1, 0.0, 0.2, 0.7, 0.1, 0.1, 0.2, 0.7, 0.3, 0.3, 0.4, 0.4, 0.5, 0.1, 0.2, 0.1, 0.6};
  double expected = 0;
  for (int c = 0; c < 3; ++c) {
    std::vector<int> p;
    std::vector<double> s;
    for (int i = 0; i < 6; ++i) {
      p.push_back(truth[i] == c);
      s.push_back(scores[i * 3 + c]);
    }
    expected += auc(p, s) / 3;
  }
  EXPECT_NEAR(auc_ovr(truth, scores, 3), expected, 1e-15);
  // Binary: the difference of the two columns.
  EXPECT_DOUBLE_EQ(auc_ovr({0, 1, 1}, {0.5, 0.1, 0.1, 0.9, 0.2, 0.3}, 2), 1.0);
}

TEST(EvalMetrics, PearsonAndR2) {
  const double a[] = {1, 2, 3, 4, 5}, b[] = {2, 1, 4, 3, 5};
  // numpy.corrcoef -> 0.8; sklearn r2_score(a, b) = 1 - 4/10 = 0.6
  EXPECT_NEAR(pearson(a, b, 5), 0.8, 1e-15);
  EXPECT_NEAR(r2(a, b, 5), 0.6, 1e-15);
  const double c[] = {3, 3, 3, 3, 3};
  EXPECT_TRUE(std::isnan(pearson(a, c, 5)));
  // Strided: columns of a [5, 2] matrix.
  const double m[] = {1, 2, 2, 1, 3, 4, 4, 3, 5, 5};
  EXPECT_NEAR(pearson(m, m + 1, 5, 2, 2), 0.8, 1e-15);
}

TEST(EvalMetrics, IdentificationRanks) {
  // Candidates e0, e1, e2; predictions close to e1, e0, and one exactly between (rank counts strictly better).
  const std::vector<double> cand = {1, 0, 0, 0, 1, 0, 0, 0, 1};
  const std::vector<double> pred = {0.1, 0.9, 0.0, 0.8, 0.1, 0.1, 0.0, 0.6, 0.5};
  const auto r = identification_ranks(pred, cand, {1, 0, 2}, 3);
  EXPECT_EQ(r, (std::vector<int>{0, 0, 1}));
  EXPECT_DOUBLE_EQ(top_k(r, 1), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(top_k(r, 2), 1.0);
}

// Gauss-Jordan elimination with partial pivoting in long double on the augmented rows g [n][n + k]: afterwards
// g[p][n + c] holds the solution x[p][c]. The independent reference every solver here is checked against.
void gauss_jordan(std::vector<std::vector<long double>>& g, int n) {
  const int width = int(g.empty() ? 0 : g[0].size());
  for (int c = 0; c < n; ++c) {
    int piv = c;
    for (int r = c + 1; r < n; ++r)
      if (std::fabs(g[size_t(r)][size_t(c)]) > std::fabs(g[size_t(piv)][size_t(c)])) piv = r;
    std::swap(g[size_t(c)], g[size_t(piv)]);
    for (int r = 0; r < n; ++r) {
      if (r == c) continue;
      const long double f = g[size_t(r)][size_t(c)] / g[size_t(c)][size_t(c)];
      for (int q = c; q < width; ++q) g[size_t(r)][size_t(q)] -= f * g[size_t(c)][size_t(q)];
    }
  }
  for (int p = 0; p < n; ++p)
    for (int q = n; q < width; ++q) g[size_t(p)][size_t(q)] /= g[size_t(p)][size_t(p)];
}

// Closed-form ridge on standardised features, by Gaussian elimination in long double on the primal normal equations.
std::vector<long double> closed_form(const std::vector<double>& x, const std::vector<double>& y, int n, int d,
                                     double alpha, const std::vector<double>& xq) {
  std::vector<long double> mean(d, 0), sd(d, 0);
  long double ym = 0;
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < d; ++j) mean[j] += x[i * d + j] / (long double)n;
    ym += y[i] / (long double)n;
  }
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < d; ++j) sd[j] += (x[i * d + j] - mean[j]) * (x[i * d + j] - mean[j]) / n;
  for (auto& v : sd) v = std::sqrt(v);
  std::vector<std::vector<long double>> a(d, std::vector<long double>(d + 1, 0));
  for (int i = 0; i < n; ++i)
    for (int p = 0; p < d; ++p) {
      const long double zp = (x[i * d + p] - mean[p]) / sd[p];
      for (int q = 0; q < d; ++q) a[p][q] += zp * (x[i * d + q] - mean[q]) / sd[q];
      a[p][d] += zp * (y[i] - ym);
    }
  for (int p = 0; p < d; ++p) a[p][p] += alpha;
  gauss_jordan(a, d);
  std::vector<long double> out;
  const int m = int(xq.size()) / d;
  for (int i = 0; i < m; ++i) {
    long double v = ym;
    for (int p = 0; p < d; ++p) v += (xq[i * d + p] - mean[p]) / sd[p] * a[p][d];
    out.push_back(v);
  }
  return out;
}

void check_ridge(int n, int d, double alpha) {
  bfm::Rng rng(uint64_t(n * 100 + d));
  std::vector<double> x(static_cast<size_t>(n) * d), y(static_cast<size_t>(n)), xq(static_cast<size_t>(7) * d);
  for (auto& v : x) v = rng.normal() * 3 + 1;
  for (auto& v : xq) v = rng.normal() * 3 + 1;
  for (int i = 0; i < n; ++i) {
    y[i] = 0.5;
    for (int j = 0; j < d; ++j) y[i] += x[i * d + j] * ((j % 3) - 1.0);
    y[i] += rng.normal();
  }
  Ridge r;
  r.fit(x, y, n, d, 1, alpha);
  const auto got = r.predict(xq, 7);
  const auto want = closed_form(x, y, n, d, alpha, xq);
  for (int i = 0; i < 7; ++i) EXPECT_NEAR(got[i], double(want[i]), 1e-8 * (1 + std::fabs(double(want[i])))) << i;
}

TEST(EvalRidge, PrimalFormMatchesClosedForm) { check_ridge(40, 9, 3.0); }
TEST(EvalRidge, DualFormMatchesClosedForm) { check_ridge(12, 30, 0.7); }  // d > n: the dual path

// solve_spd (the blocked Cholesky every ridge solves with) against Gauss-Jordan elimination with partial pivoting in
// long double, at sizes below, at and across its block width (64) and its register tiles (6 rows, 8 columns), with
// several right-hand sides, on badly scaled SPD matrices (Gram matrices of correlated columns plus a small ridge).
TEST(EvalRidge, SolveSpdMatchesGaussJordanAcrossBlockSizes) {
  for (int n : {1, 3, 8, 63, 64, 65, 131, 200}) {
    for (int k : {1, 5}) {
      bfm::Rng rng(uint64_t(n * 10 + k));
      const int m = n + 7;
      std::vector<double> z(size_t(m) * n), a(size_t(n) * n), b(size_t(n) * k);
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) z[size_t(i) * n + j] = rng.normal() * (1 + j % 5) + (j > 0 ? 0.6 * z[size_t(i) * n + j - 1] : 0);
      for (int p = 0; p < n; ++p)
        for (int q = 0; q < n; ++q) {
          long double s = p == q ? 0.05L : 0.0L;
          for (int i = 0; i < m; ++i) s += (long double)z[size_t(i) * n + p] * z[size_t(i) * n + q];
          a[size_t(p) * n + q] = double(s);
        }
      for (auto& v : b) v = rng.normal();
      std::vector<std::vector<long double>> g(size_t(n), std::vector<long double>(size_t(n + k)));
      for (int p = 0; p < n; ++p) {
        for (int q = 0; q < n; ++q) g[size_t(p)][size_t(q)] = a[size_t(p) * n + q];
        for (int c = 0; c < k; ++c) g[size_t(p)][size_t(n + c)] = b[size_t(p) * k + c];
      }
      gauss_jordan(g, n);
      std::vector<double> x = b, work = a;
      solve_spd(work, x, n, k);
      double worst = 0, scale = 0;
      for (int p = 0; p < n; ++p)
        for (int c = 0; c < k; ++c) {
          const long double want = g[size_t(p)][size_t(n + c)];
          worst = std::max(worst, double(std::fabs(x[size_t(p) * k + c] - want)));
          scale = std::max(scale, double(std::fabs(want)));
        }
      EXPECT_LT(worst, 1e-7 * scale) << "n " << n << " k " << k;
    }
  }
  std::vector<double> indefinite = {1, 2, 2, 1}, rhs = {1, 1};
  EXPECT_THROW(solve_spd(indefinite, rhs, 2, 1), bfm::Error);
}

TEST(EvalRidge, WeightsActAsRepeatedRows) {
  bfm::Rng rng(3);
  const int n = 15, d = 4;
  std::vector<double> x(n * d), y(n * 2), w(n);
  for (auto& v : x) v = rng.normal();
  for (auto& v : y) v = rng.normal();
  std::vector<double> xr, yr;
  for (int i = 0; i < n; ++i) {
    w[i] = 1 + (i % 3);
    for (int k = 0; k < w[i]; ++k) {
      xr.insert(xr.end(), &x[i * d], &x[i * d] + d);
      yr.insert(yr.end(), &y[i * 2], &y[i * 2] + 2);
    }
  }
  Ridge a, b;
  a.fit(x, y, n, d, 2, 2.0, w);
  b.fit(xr, yr, int64_t(xr.size() / d), d, 2, 2.0);
  const auto pa = a.predict(x, n), pb = b.predict(x, n);
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_NEAR(pa[i], pb[i], 1e-9);
}

TEST(EvalSplits, GroupsNeverSpanTwoFoldsAndFoldsAreBalanced) {
  bfm::Rng rng(1);
  std::vector<int64_t> group;
  for (int i = 0; i < 300; ++i) group.push_back(int64_t(rng.below(70)));
  const auto fold = group_folds(group, 5, 9);
  std::map<int64_t, std::set<int>> folds_of;
  std::vector<int> size(5, 0);
  for (size_t i = 0; i < group.size(); ++i) {
    folds_of[group[i]].insert(fold[i]);
    ASSERT_GE(fold[i], 0);
    ASSERT_LT(fold[i], 5);
    size[fold[i]] += 1;
  }
  for (const auto& [g, f] : folds_of) EXPECT_EQ(f.size(), 1u) << "group " << g;
  for (int s : size) EXPECT_NEAR(s, 60, 10);
  // Fewer groups than folds: as many folds as groups.
  const auto few = group_folds({4, 4, 9, 9, 9}, 5, 0);
  EXPECT_EQ(std::set<int>(few.begin(), few.end()).size(), 2u);
}

TEST(EvalSplits, FoldsDependOnTheRowsNotOnTheGroupsNumbers) {
  // A held-out subject's stimuli are numbered in the order the corpus' subjects were read; renumbering them (other
  // subjects read before it) must not move its trials between folds.
  bfm::Rng rng(3);
  std::vector<int64_t> group, renumbered;
  for (int i = 0; i < 200; ++i) group.push_back(int64_t(rng.below(40)));
  for (int64_t g : group) renumbered.push_back(1000 + (g * 7919) % 40 * 3);  // a bijection that reorders the values
  EXPECT_EQ(group_folds(group, 5, 11), group_folds(renumbered, 5, 11));
}

TEST(EvalSplits, PurgeDropsTrainingWindowsOverlappingATestWindow) {
  // Windows of length 10 every 6 time points in series 0, and one far away in series 1.
  std::vector<int64_t> series, start, end;
  std::vector<int> fold;
  for (int i = 0; i < 8; ++i) {
    series.push_back(0);
    start.push_back(i * 6);
    end.push_back(i * 6 + 10);
    fold.push_back(i == 3 ? 1 : 0);
  }
  series.push_back(1), start.push_back(18), end.push_back(28), fold.push_back(0);
  const auto train = purged_train_rows(fold, 1, series, start, end);
  // Test window [18, 28): rows 2 [12, 22) and 4 [24, 34) overlap it; the other series does not.
  EXPECT_EQ(train, (std::vector<int64_t>{0, 1, 5, 6, 7, 8}));
  for (int64_t r : train) {
    if (series[r] == 0) {
      EXPECT_TRUE(end[r] <= 18 || start[r] >= 28);
    }
  }
}

TEST(EvalRidge, InnerCvPicksStrongRegularisationForNoise) {
  // Pure noise targets: the inner CV must prefer the largest alpha; a clean linear target the smallest.
  bfm::Rng rng(8);
  const int n = 60, d = 20;
  std::vector<double> x(n * d), noise(n), clean(n);
  for (auto& v : x) v = rng.normal();
  for (int i = 0; i < n; ++i) {
    noise[i] = rng.normal();
    clean[i] = 0;
    for (int j = 0; j < d; ++j) clean[i] += x[i * d + j];
  }
  std::vector<int64_t> rows(n), group(n), series(n, 0), start(n), end(n);
  for (int i = 0; i < n; ++i) rows[i] = group[i] = start[i] = i, end[i] = i + 1;
  InnerCv cv;
  EXPECT_GE(fit_ridge_cv(x, noise, d, 1, rows, group, series, start, end, cv).alpha(), 1e3);
  EXPECT_LE(fit_ridge_cv(x, clean, d, 1, rows, group, series, start, end, cv).alpha(), 1.0);
}

TEST(EvalPaired, StudentTQuantileMatchesClosedFormsAndTables) {
  const double pi = std::acos(-1.0);
  // df = 1 (Cauchy): tan(pi (p - 1/2)); df = 2: (2p - 1) / sqrt(2 p (1 - p)).
  for (double p : {0.6, 0.9, 0.975, 0.995}) {
    EXPECT_NEAR(student_t_quantile(p, 1), std::tan(pi * (p - 0.5)), 1e-9 * std::tan(pi * (p - 0.5)));
    EXPECT_NEAR(student_t_quantile(p, 2), (2 * p - 1) / std::sqrt(2 * p * (1 - p)), 1e-10);
  }
  // Printed tables (e.g. NIST/SEMATECH e-Handbook, Table 1.3.6.7.2), to their digits.
  EXPECT_NEAR(student_t_quantile(0.975, 5), 2.570582, 1e-6);
  EXPECT_NEAR(student_t_quantile(0.975, 10), 2.228139, 1e-6);
  EXPECT_NEAR(student_t_quantile(0.975, 30), 2.042272, 1e-6);
  EXPECT_NEAR(student_t_quantile(0.975, 100), 1.983972, 1e-6);
  EXPECT_NEAR(student_t_quantile(0.95, 3), 2.353363, 1e-6);
  EXPECT_NEAR(student_t_quantile(0.995, 4), 4.604095, 1e-6);
  EXPECT_NEAR(student_t_quantile(0.025, 10), -2.228139, 1e-6);
  EXPECT_NEAR(student_t_quantile(0.5, 7), 0.0, 1e-12);
}

TEST(EvalPaired, IntervalIsMeanPlusMinusTTimesStandardError) {
  // Differences 0.1, 0.3, 0.2, 0.4: mean 0.25, sd sqrt(0.05 / 3); t_{0.975, 3} = 3.182446 (tables).
  const PairedInterval pi = paired_t_interval({0.1, 0.3, 0.2, 0.4, std::nan("")});
  const double se = std::sqrt(0.05 / 3) / 2;
  EXPECT_EQ(pi.n, 4);
  EXPECT_NEAR(pi.mean, 0.25, 1e-15);
  EXPECT_NEAR(pi.low, 0.25 - 3.182446 * se, 1e-6);
  EXPECT_NEAR(pi.high, 0.25 + 3.182446 * se, 1e-6);
  EXPECT_TRUE(std::isnan(paired_t_interval({0.3}).low));
}

// PopulationRidge::fit_with against the normal equations in long double, Gauss-Jordan: features standardised with the
// population's mean and sd, the intercept's centring over population and subject rows together, the penalty the
// constructor chose. Subject row counts on both sides of the low-rank (Woodbury) path's limit (d / 3 - 2 rows).
TEST(EvalRidge, PopulationRidgeWithASubjectsRowsMatchesTheNormalEquations) {
  const int n_pop = 160, d = 36, k = 2;
  bfm::Rng rng(17);
  std::vector<double> x(size_t(n_pop + 40) * d), y(size_t(n_pop + 40) * k);
  for (int i = 0; i < n_pop + 40; ++i) {
    const double shift = i < n_pop ? 0.0 : 0.7;  // the subject's rows sit off the population's mean
    for (int p = 0; p < d; ++p) x[size_t(i * d + p)] = rng.normal() * (1 + p % 4) + shift + (p % 5 == 0 ? 3.0 : 0.0);
    for (int c = 0; c < k; ++c) {
      double v = c + rng.normal();
      for (int p = 0; p < d; ++p) v += x[size_t(i * d + p)] * (((p + c) % 3) - 1.0) * 0.3;
      y[size_t(i * k + c)] = v;
    }
  }
  std::vector<double> xp(x.begin(), x.begin() + n_pop * d), yp(y.begin(), y.begin() + n_pop * k);
  std::vector<int64_t> group(n_pop);
  for (int i = 0; i < n_pop; ++i) group[size_t(i)] = i / 20;
  const PopulationRidge ridge(xp, yp, d, k, group, default_alphas(), 3);
  for (int r : {0, 1, 5, 10, 11, 30}) {
    SCOPED_TRACE("subject rows " + std::to_string(r));
    std::vector<int64_t> rows;
    for (int i = 0; i < r; ++i) rows.push_back(n_pop + i);
    const Linear got = ridge.fit_with(x, y, rows);
    // Reference.
    std::vector<long double> mean(d, 0), sd(d, 0);
    for (int i = 0; i < n_pop; ++i)
      for (int p = 0; p < d; ++p) mean[p] += x[size_t(i * d + p)] / (long double)n_pop;
    for (int i = 0; i < n_pop; ++i)
      for (int p = 0; p < d; ++p) sd[p] += (x[size_t(i * d + p)] - mean[p]) * (x[size_t(i * d + p)] - mean[p]) / n_pop;
    for (auto& v : sd) v = std::sqrt(v);
    std::vector<int> all;
    for (int i = 0; i < n_pop; ++i) all.push_back(i);
    for (int64_t i : rows) all.push_back(int(i));
    const long double n = all.size();
    std::vector<long double> zm(d, 0), ym(k, 0);
    for (int i : all) {
      for (int p = 0; p < d; ++p) zm[p] += (x[size_t(i * d + p)] - mean[p]) / sd[p] / n;
      for (int c = 0; c < k; ++c) ym[c] += y[size_t(i * k + c)] / n;
    }
    std::vector<std::vector<long double>> a(d, std::vector<long double>(d + k, 0));
    for (int i : all)
      for (int p = 0; p < d; ++p) {
        const long double zp = (x[size_t(i * d + p)] - mean[p]) / sd[p] - zm[p];
        for (int q = 0; q < d; ++q) a[p][q] += zp * ((x[size_t(i * d + q)] - mean[q]) / sd[q] - zm[q]);
        for (int c = 0; c < k; ++c) a[p][d + c] += zp * (y[size_t(i * k + c)] - ym[c]);
      }
    for (int p = 0; p < d; ++p) a[p][p] += ridge.alpha();
    gauss_jordan(a, d);
    for (int c = 0; c < k; ++c) {
      long double b = ym[c], wmax = 0;
      for (int p = 0; p < d; ++p) {
        const long double w = a[p][d + c];
        b -= zm[p] * w;
        wmax = std::max(wmax, std::fabs(w));
        EXPECT_NEAR(got.w[size_t(p * k + c)], double(w), 1e-9 * double(wmax + 1)) << "weight " << p << ", " << c;
      }
      EXPECT_NEAR(got.b[size_t(c)], double(b), 1e-9 * (1 + std::fabs(double(b)))) << "bias " << c;
    }
  }
}

TEST(EvalPaired, ComparisonsPickTheBestPreTrainedMethodZeroShotClipIncluded) {
  // Three held-out subjects, two folds. Retrieval: the zero-shot clip (no label read) beats probe_pop, so it is the
  // method compared; category: probe_pop, against stimridge_pop (a baseline). Differences worked by hand.
  EvalReport report;
  const auto add = [&](const std::string& task, const std::string& method, const std::string& metric,
                       const std::string& subject, int fold, double v) {
    report.rows.push_back({task, method, 1.0, subject, fold, metric, v});
  };
  const std::vector<std::string> subjects = {"s1", "s2", "s3"};
  for (size_t i = 0; i < subjects.size(); ++i)
    for (int f = 0; f < 2; ++f) {
      const double base = 0.1 * double(i) + 0.01 * f;
      add("retrieval", "clip", "top1", subjects[i], f, 0.5 + base);
      add("retrieval", "probe_pop", "top1", subjects[i], f, 0.4 + base);
      add("retrieval", "ridge", "top1", subjects[i], f, 0.2 + base * (1 + double(i)));
      add("category", "probe_pop", "balanced_accuracy", subjects[i], f, 0.8 + base);
      add("category", "stimridge_pop", "balanced_accuracy", subjects[i], f, 0.7 + base * double(i));
    }
  summarize(report);
  std::map<std::string, Comparison> got;
  for (const Comparison& c : report.comparisons) got[c.task + "/" + c.baseline] = c;
  ASSERT_EQ(got.count("retrieval/ridge"), 1u);
  EXPECT_EQ(got["retrieval/ridge"].method, "clip");
  // clip - ridge per subject: 0.3 - base * i, base's fold mean 0.1 i + 0.005: 0.3, 0.3 - 0.105, 0.3 - 0.41.
  const std::vector<double> d = {0.3, 0.3 - 0.105, 0.3 - 2 * 0.205};
  EXPECT_NEAR(got["retrieval/ridge"].mean, (d[0] + d[1] + d[2]) / 3, 1e-12);
  EXPECT_EQ(got["retrieval/ridge"].n, 3);
  ASSERT_EQ(got.count("category/stimridge_pop"), 1u);
  EXPECT_EQ(got["category/stimridge_pop"].method, "probe_pop");
  // probe_pop - stimridge_pop per subject: 0.1 + mean base (1 - i): 0.1 + 0.005, 0.1, 0.1 - 0.205.
  EXPECT_NEAR(got["category/stimridge_pop"].mean, (0.105 + 0.1 + (0.1 - 0.205)) / 3, 1e-12);
}

TEST(EvalPca, EigenDecompositionSatisfiesItsDefinition) {
  bfm::Rng rng(11);
  const int n = 9;
  std::vector<double> a(n * n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j <= i; ++j) a[i * n + j] = a[j * n + i] = rng.normal();
  std::vector<double> work = a, values, vectors;
  symmetric_eigen(work, n, &values, &vectors);
  double trace = 0, sum = 0;
  for (int i = 0; i < n; ++i) trace += a[i * n + i], sum += values[i];
  EXPECT_NEAR(trace, sum, 1e-12);
  for (int r = 0; r < n; ++r) {
    if (r > 0) EXPECT_GE(values[r - 1], values[r]);
    for (int i = 0; i < n; ++i) {
      long double av = 0;
      for (int j = 0; j < n; ++j) av += (long double)a[i * n + j] * vectors[r * n + j];
      EXPECT_NEAR(double(av), values[r] * vectors[r * n + i], 1e-12);
    }
    for (int q = 0; q < n; ++q) {
      double dot = 0;
      for (int i = 0; i < n; ++i) dot += vectors[r * n + i] * vectors[q * n + i];
      EXPECT_NEAR(dot, r == q ? 1.0 : 0.0, 1e-12);
    }
  }
}

TEST(EvalPca, BasisAndProjectionAgainstNaiveCovariance) {
  // Two subjects with a run each, 6 parcels with correlated signal; patches of 3 time points.
  using namespace bfm::launch::eval;
  EvalData data;
  data.n_parcels = 6, data.window = 6;
  bfm::Rng rng(12);
  for (int s = 0; s < 3; ++s) {
    EvalSubject sub;
    sub.id = "s" + std::to_string(s);
    EvalRun run;
    run.length = 40 + 5 * s;  // not a multiple of 3: the last partial patch is left out
    for (int64_t t = 0; t < run.length; ++t) {
      const double f = rng.normal(), g = rng.normal();
      for (int p = 0; p < 6; ++p) run.timeseries.push_back(float(f * (p + 1) + g * (p % 2) + 0.3 * rng.normal() + p));
    }
    sub.runs.push_back(run);
    data.subjects.push_back(sub);
  }
  const int L = 3, C = 3;
  const PcaBasis pca = fit_pca(data, {0, 2}, L, C);  // subject 1 is left out
  // The reference: patch means and covariance in long double, subjects 0 and 2 only.
  std::vector<std::vector<long double>> patches;
  for (int s : {0, 2}) {
    const EvalRun& r = data.subjects[s].runs[0];
    for (int64_t t0 = 0; t0 + L <= r.length; t0 += L) {
      std::vector<long double> m(6, 0);
      for (int64_t t = t0; t < t0 + L; ++t)
        for (int p = 0; p < 6; ++p) m[p] += r.timeseries[t * 6 + p] / (long double)L;
      patches.push_back(m);
    }
  }
  ASSERT_EQ(pca.patches, int64_t(patches.size()));
  std::vector<long double> mean(6, 0), cov(36, 0);
  for (const auto& m : patches)
    for (int p = 0; p < 6; ++p) mean[p] += m[p] / patches.size();
  for (const auto& m : patches)
    for (int p = 0; p < 6; ++p)
      for (int q = 0; q < 6; ++q) cov[p * 6 + q] += (m[p] - mean[p]) * (m[q] - mean[q]) / patches.size();
  long double trace = 0;
  for (int p = 0; p < 6; ++p) {
    EXPECT_NEAR(pca.mean[p], double(mean[p]), 1e-9);
    trace += cov[p * 6 + p];
  }
  EXPECT_NEAR(pca.total_variance, double(trace), 1e-9);
  for (int c = 0; c < C; ++c) {
    for (int p = 0; p < 6; ++p) {
      long double cv = 0;
      for (int q = 0; q < 6; ++q) cv += cov[p * 6 + q] * pca.basis[c * 6 + q];
      EXPECT_NEAR(double(cv), pca.variance[c] * pca.basis[c * 6 + p], 1e-8);
    }
  }
  // The first component carries most of the variance (the shared factor f): asked for 80 % of it, one component.
  EXPECT_GT(pca.variance[0], 0.8 * double(trace));
  EXPECT_EQ(fit_pca(data, {0, 2}, L, C, 0.8).components, 1);
  EXPECT_EQ(fit_pca(data, {0, 2}, L, C, 0.999999).components, C);  // capped
  // Projection of two windows' raw features [n_t = 2, P = 6]: (xbar - mean) . basis_c per patch.
  std::vector<double> raw(2 * 2 * 6);
  for (auto& v : raw) v = rng.normal();
  const auto f = pca_features(pca, raw, 2, 2);
  ASSERT_EQ(f.size(), size_t(2 * 2 * C));
  for (int w = 0; w < 4; ++w)
    for (int c = 0; c < C; ++c) {
      long double v = 0;
      for (int p = 0; p < 6; ++p) v += (raw[w * 6 + p] - (long double)mean[p]) * pca.basis[c * 6 + p];
      EXPECT_NEAR(f[w * C + c], double(v), 1e-9);
    }
}

}  // namespace
