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
  factor_.assign(size_t(d) * d, 0.0);
  for (int p = 0; p < d; ++p)
    for (int q = 0; q <= p; ++q)
      factor_[size_t(p) * d + q] =
          total_.xx[size_t(p) * d + q] - total_.sx[size_t(p)] * total_.sx[size_t(q)] / total_.n + (p == q ? alpha_ : 0);
  cholesky_factor(factor_.data(), d);
}

Linear PopulationRidge::fit_with(const std::vector<double>& x, const std::vector<double>& y,
                                 const std::vector<int64_t>& rows) const {
  if (3 * (int64_t(rows.size()) + 2) <= d_) return fit_low_rank(x, y, rows);
  Stats s = total_;
  for (int64_t r : rows) add(s, &x[size_t(r * d_)], &y[size_t(r * k_)]);
  return solve(s, alpha_);
}

// With the subject's standardised rows z_i, the system to solve is
//   A = sum_all z z^T - sx sx^T / n + alpha I = A_pop + sum_i z_i z_i^T + u u^T - v v^T,
// u = sx_pop / sqrt(n_pop), v = sx / sqrt(n) (the centring before and after the rows join), A_pop = L L^T factored
// once. Woodbury with U = [z_1 .. z_r, u, v] and signs S = diag(1 .. 1, 1, -1):
//   A^-1 b = L^-T (L^-1 b - V (S + V^T V)^-1 V^T L^-1 b),  V = L^-1 U.
Linear PopulationRidge::fit_low_rank(const std::vector<double>& x, const std::vector<double>& y,
                                     const std::vector<int64_t>& rows) const {
  const int d = d_, k = k_;
  const int64_t r = int64_t(rows.size()) + 2;
  Stats s;  // the sums of z, y and z y^T over population and rows (z z^T is not formed)
  s.sx = total_.sx, s.sy = total_.sy, s.xy = total_.xy, s.n = total_.n;
  std::vector<double> u(size_t(d) * size_t(r), 0.0);  // U [d, r], row-major
  for (size_t i = 0; i < rows.size(); ++i) {
    const double* xi = &x[size_t(rows[i] * d)];
    const double* yi = &y[size_t(rows[i] * k)];
    for (int p = 0; p < d; ++p) {
      const double z = (xi[p] - mean_[size_t(p)]) / scale_[size_t(p)];
      u[size_t(p) * r + i] = z;
      s.sx[size_t(p)] += z;
      for (int c = 0; c < k; ++c) s.xy[size_t(p * k + c)] += z * yi[c];
    }
    for (int c = 0; c < k; ++c) s.sy[size_t(c)] += yi[c];
    s.n += 1;
  }
  for (int p = 0; p < d; ++p) {
    u[size_t(p) * r + size_t(r - 2)] = total_.sx[size_t(p)] / std::sqrt(total_.n);
    u[size_t(p) * r + size_t(r - 1)] = s.sx[size_t(p)] / std::sqrt(s.n);
  }
  std::vector<double> w(size_t(d) * k);  // the right-hand side, then the solution
  for (int p = 0; p < d; ++p)
    for (int c = 0; c < k; ++c) w[size_t(p * k + c)] = s.xy[size_t(p * k + c)] - s.sx[size_t(p)] * s.sy[size_t(c)] / s.n;
  cholesky_forward(factor_.data(), w.data(), d, k);  // L^-1 b
  cholesky_forward(factor_.data(), u.data(), d, int(r));  // V = L^-1 U
  std::vector<double> m(size_t(r * r), 0.0), g(size_t(r) * k, 0.0);
  for (int p = 0; p < d; ++p) {
    const double* vp = &u[size_t(p) * r];
    const double* wp = &w[size_t(p) * k];
    for (int64_t a = 0; a < r; ++a) {
      for (int64_t b = 0; b < r; ++b) m[size_t(a * r + b)] += vp[a] * vp[b];
      for (int c = 0; c < k; ++c) g[size_t(a * k + c)] += vp[a] * wp[c];
    }
  }
  for (int64_t a = 0; a < r; ++a) m[size_t(a * r + a)] += a == r - 1 ? -1.0 : 1.0;
  solve_general(m, g, r, k);  // (S + V^T V)^-1 V^T L^-1 b
  for (int p = 0; p < d; ++p)
    for (int64_t a = 0; a < r; ++a) {
      const double v = u[size_t(p) * r + a];
      for (int c = 0; c < k; ++c) w[size_t(p * k + c)] -= v * g[size_t(a * k + c)];
    }
  cholesky_backward(factor_.data(), w.data(), d, k);
  return to_linear(s, std::move(w));
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
  return to_linear(s, std::move(rhs));
}

Linear PopulationRidge::to_linear(const Stats& s, std::vector<double> w) const {
  const int d = d_, k = k_;
  Linear out;
  out.d = d, out.k = k, out.mean = mean_, out.scale = scale_, out.w = std::move(w);
  out.b.assign(size_t(k), 0.0);
  for (int c = 0; c < k; ++c) {
    double v = s.sy[size_t(c)] / s.n;
    for (int p = 0; p < d; ++p) v -= s.sx[size_t(p)] / s.n * out.w[size_t(p * k + c)];
    out.b[size_t(c)] = v;
  }
  return out;
}

}  // namespace bfm::launch::eval
