// Ridge over the pre-training subjects plus one new subject's rows (population_ridge.h).
#include "launch/eval/population_ridge.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "launch/eval/stats.h"

namespace bfm::launch::eval {

std::vector<double> Linear::predict(const std::vector<double>& x, int64_t n) const {
  std::vector<double> out(size_t(n * k));
  for (int64_t i = 0; i < n; ++i) {
    for (int c = 0; c < k; ++c) out[size_t(i * k + c)] = b[size_t(c)];
    for (int p = 0; p < d; ++p) {
      const double v = (x[size_t(i * d + p)] - mean[size_t(p)]) / scale[size_t(p)];
      if (v == 0) continue;
      for (int c = 0; c < k; ++c) out[size_t(i * k + c)] += v * w[size_t(p * k + c)];
    }
  }
  return out;
}

PopulationRidge::PopulationRidge(const std::vector<double>& x, const std::vector<double>& y, int d, int k,
                                 const std::vector<int64_t>& group, const std::vector<double>& alphas, uint64_t seed)
    : d_(d), k_(k) {
  const int64_t n = int64_t(group.size());
  require(n >= 2, "population ridge: fewer than 2 rows");
  mean_.assign(size_t(d), 0.0);
  scale_.assign(size_t(d), 1.0);
  for (int64_t i = 0; i < n; ++i)
    for (int p = 0; p < d; ++p) mean_[size_t(p)] += x[size_t(i * d + p)] / double(n);
  std::vector<double> var(size_t(d), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int p = 0; p < d; ++p) {
      const double c = x[size_t(i * d + p)] - mean_[size_t(p)];
      var[size_t(p)] += c * c / double(n);
    }
  for (int p = 0; p < d; ++p) scale_[size_t(p)] = var[size_t(p)] > 1e-24 ? std::sqrt(var[size_t(p)]) : 1.0;
  const std::vector<int> fold = group_folds(group, 4, seed);
  const int folds = *std::max_element(fold.begin(), fold.end()) + 1;
  std::vector<Stats> per(size_t(folds), Stats(d, k));
  for (int64_t i = 0; i < n; ++i) add(per[size_t(fold[size_t(i)])], &x[size_t(i * d)], &y[size_t(i * k)]);
  total_ = Stats(d, k);
  for (const auto& s : per) total_.add(s, 1.0);
  alpha_ = alphas[alphas.size() / 2];
  if (folds >= 2) {
    std::vector<double> err(alphas.size(), 0.0);
    for (int f = 0; f < folds; ++f) {
      Stats train = total_;
      train.add(per[size_t(f)], -1.0);
      std::vector<int64_t> rows;
      for (int64_t i = 0; i < n; ++i)
        if (fold[size_t(i)] == f) rows.push_back(i);
      const auto xv = take_rows(x, d, rows), yv = take_rows(y, k, rows);
      for (size_t a = 0; a < alphas.size(); ++a) {
        const auto p = solve(train, alphas[a]).predict(xv, int64_t(rows.size()));
        for (size_t i = 0; i < p.size(); ++i) err[a] += (p[i] - yv[i]) * (p[i] - yv[i]);
      }
    }
    alpha_ = alphas[size_t(std::min_element(err.begin(), err.end()) - err.begin())];
  }
}

Linear PopulationRidge::fit_with(const std::vector<double>& x, const std::vector<double>& y,
                                 const std::vector<int64_t>& rows) const {
  Stats s = total_;
  for (int64_t r : rows) add(s, &x[size_t(r * d_)], &y[size_t(r * k_)]);
  return solve(s, alpha_);
}

void PopulationRidge::add(Stats& s, const double* x, const double* y) const {
  std::vector<double> z(static_cast<size_t>(d_));
  for (int p = 0; p < d_; ++p) z[size_t(p)] = (x[p] - mean_[size_t(p)]) / scale_[size_t(p)];
  for (int p = 0; p < d_; ++p) {
    const double v = z[size_t(p)];
    s.sx[size_t(p)] += v;
    if (v == 0) continue;
    double* row = &s.xx[size_t(p) * d_];
    for (int q = 0; q <= p; ++q) row[q] += v * z[size_t(q)];
    for (int c = 0; c < k_; ++c) s.xy[size_t(p * k_ + c)] += v * y[c];
  }
  for (int c = 0; c < k_; ++c) s.sy[size_t(c)] += y[c];
  s.n += 1;
}

Linear PopulationRidge::solve(const Stats& s, double alpha) const {
  const int d = d_, k = k_;
  std::vector<double> a(size_t(d) * d), rhs(size_t(d) * k);
  for (int p = 0; p < d; ++p)
    for (int q = 0; q <= p; ++q) {
      const double v = s.xx[size_t(p) * d + q] - s.sx[size_t(p)] * s.sx[size_t(q)] / s.n;
      a[size_t(p) * d + q] = a[size_t(q) * d + p] = v;
    }
  for (int p = 0; p < d; ++p) {
    a[size_t(p) * d + p] += alpha;
    for (int c = 0; c < k; ++c) rhs[size_t(p * k + c)] = s.xy[size_t(p * k + c)] - s.sx[size_t(p)] * s.sy[size_t(c)] / s.n;
  }
  solve_spd(a, rhs, d, k);
  Linear out;
  out.d = d, out.k = k, out.mean = mean_, out.scale = scale_, out.w = rhs;
  out.b.assign(size_t(k), 0.0);
  for (int c = 0; c < k; ++c) {
    double v = s.sy[size_t(c)] / s.n;
    for (int p = 0; p < d; ++p) v -= s.sx[size_t(p)] / s.n * rhs[size_t(p * k + c)];
    out.b[size_t(c)] = v;
  }
  return out;
}

}  // namespace bfm::launch::eval
