#include "launch/eval/stats.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <set>

#include "base/error.h"
#include "base/rng.h"
#include "kernels/cpu/vec_math.h"

namespace bfm::launch::eval {

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The blocked Cholesky's trailing update of one tile: rows i .. i+MR of the block column that starts at j0 lose
// their products with the panel's rows c0 .. c0+8 over the columns 0 .. j0 already factored. `panel` holds those panel
// rows transposed, p-major with a row stride of `stride` (the block's width rounded up to 8), so that each step
// loads 8 contiguous values once and multiplies them by MR broadcast entries into MR vector accumulators.
template <int MR>
void update_tile(double* a, int64_t n, int64_t i, int64_t j0, int64_t c0, int64_t width, const double* panel,
                 int64_t stride) {
  using kernels::cpu::Double8;
  Double8 acc[MR] = {};
  const double* rows[MR];
  for (int r = 0; r < MR; ++r) rows[r] = a + (i + r) * n;
  for (int64_t p = 0; p < j0; ++p) {
    Double8 b;
    std::memcpy(&b, panel + p * stride + c0, sizeof b);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) acc[r] += rows[r][p] * b;
  }
  const int64_t cols = std::min<int64_t>(8, width - c0);
  for (int r = 0; r < MR; ++r)
    for (int64_t q = 0; q < cols; ++q) a[(i + r) * n + j0 + c0 + q] -= acc[r][q];
}

}  // namespace

// In-place Cholesky a = L L^T of the SPD matrix a [n, n] (row-major; the lower triangle is read, L written there,
// the upper triangle left undefined). Left-looking by block columns of kBlock: each block column first loses its
// products with the columns already factored (a matrix product, nearly all of the n^3 / 3 operations, done in the
// register tiles above), then its diagonal block is factored and the rows below it solved against that block.
// Every sum runs over the same terms as the textbook's j-p-i loops, in blocks; the float64 result agrees with them
// to rounding.
void cholesky_factor(double* a, int64_t n) {
  constexpr int64_t kBlock = 64;
  std::vector<double> panel;
  for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
    const int64_t width = std::min(kBlock, n - j0);
    const int64_t stride = (width + 7) / 8 * 8;
    if (j0 > 0) {
      panel.assign(size_t(j0 * stride), 0.0);
      for (int64_t c = 0; c < width; ++c)
        for (int64_t p = 0; p < j0; ++p) panel[size_t(p * stride + c)] = a[(j0 + c) * n + p];
      for (int64_t c0 = 0; c0 < width; c0 += 8) {
        // Rows above the tile's first column are in the upper triangle: skipped.
        int64_t i = j0 + c0;
        for (; i + 6 <= n; i += 6) update_tile<6>(a, n, i, j0, c0, width, panel.data(), stride);
        for (; i < n; ++i) update_tile<1>(a, n, i, j0, c0, width, panel.data(), stride);
      }
    }
    for (int64_t j = j0; j < j0 + width; ++j) {  // the diagonal block, and the rows below it, column by column
      double s = a[j * n + j];
      for (int64_t p = j0; p < j; ++p) s -= a[j * n + p] * a[j * n + p];
      require(s > 0, "ridge: the regularised system is not positive definite (alpha too small?)");
      const double d = std::sqrt(s);
      a[j * n + j] = d;
      const double* aj = &a[j * n];
      for (int64_t i = j + 1; i < n; ++i) {
        double* ai = &a[i * n];
        double t = ai[j];
        for (int64_t p = j0; p < j; ++p) t -= ai[p] * aj[p];
        ai[j] = t / d;
      }
    }
  }
}

// Both sweeps go along L's rows (contiguous) and update whole rows of b.
void cholesky_forward(const double* l, double* b, int64_t n, int k) {
  for (int64_t i = 0; i < n; ++i) {  // L z = b
    double* bi = b + i * k;
    const double* li = l + i * n;
    for (int64_t p = 0; p < i; ++p) {
      const double v = li[p];
      const double* bp = b + p * k;
      for (int c = 0; c < k; ++c) bi[c] -= v * bp[c];
    }
    for (int c = 0; c < k; ++c) bi[c] /= li[i];
  }
}

void cholesky_backward(const double* l, double* b, int64_t n, int k) {
  for (int64_t i = n - 1; i >= 0; --i) {  // L^T x = z: x_i final once the rows below have given theirs
    double* bi = b + i * k;
    const double* li = l + i * n;
    for (int c = 0; c < k; ++c) bi[c] /= li[i];
    for (int64_t p = 0; p < i; ++p) {
      const double v = li[p];
      double* bp = b + p * k;
      for (int c = 0; c < k; ++c) bp[c] -= v * bi[c];
    }
  }
}

void solve_general(std::vector<double>& a, std::vector<double>& b, int64_t n, int k) {
  for (int64_t c = 0; c < n; ++c) {
    int64_t piv = c;
    for (int64_t r = c + 1; r < n; ++r)
      if (std::fabs(a[size_t(r * n + c)]) > std::fabs(a[size_t(piv * n + c)])) piv = r;
    require(a[size_t(piv * n + c)] != 0, "ridge: a singular system");
    if (piv != c) {
      for (int64_t q = 0; q < n; ++q) std::swap(a[size_t(c * n + q)], a[size_t(piv * n + q)]);
      for (int q = 0; q < k; ++q) std::swap(b[size_t(c * k + q)], b[size_t(piv * k + q)]);
    }
    for (int64_t r = c + 1; r < n; ++r) {
      const double f = a[size_t(r * n + c)] / a[size_t(c * n + c)];
      if (f == 0) continue;
      for (int64_t q = c; q < n; ++q) a[size_t(r * n + q)] -= f * a[size_t(c * n + q)];
      for (int q = 0; q < k; ++q) b[size_t(r * k + q)] -= f * b[size_t(c * k + q)];
    }
  }
  for (int64_t r = n - 1; r >= 0; --r) {
    for (int q = 0; q < k; ++q) {
      double v = b[size_t(r * k + q)];
      for (int64_t c = r + 1; c < n; ++c) v -= a[size_t(r * n + c)] * b[size_t(c * k + q)];
      b[size_t(r * k + q)] = v / a[size_t(r * n + r)];
    }
  }
}

void solve_spd(std::vector<double>& a, std::vector<double>& b, int64_t n, int k) {
  cholesky_factor(a.data(), n);
  cholesky_forward(a.data(), b.data(), n, k);
  cholesky_backward(a.data(), b.data(), n, k);
}

double accuracy(const std::vector<int>& truth, const std::vector<int>& predicted) {
  require(truth.size() == predicted.size(), "accuracy: sizes differ");
  if (truth.empty()) return kNaN;
  int64_t hit = 0;
  for (size_t i = 0; i < truth.size(); ++i) hit += truth[i] == predicted[i];
  return double(hit) / double(truth.size());
}

double balanced_accuracy(const std::vector<int>& truth, const std::vector<int>& predicted) {
  require(truth.size() == predicted.size(), "balanced_accuracy: sizes differ");
  std::map<int, std::pair<int64_t, int64_t>> per;  // class -> (hits, count)
  for (size_t i = 0; i < truth.size(); ++i) {
    auto& e = per[truth[i]];
    e.first += truth[i] == predicted[i];
    e.second += 1;
  }
  if (per.empty()) return kNaN;
  double s = 0;
  for (const auto& [c, e] : per) s += double(e.first) / double(e.second);
  return s / double(per.size());
}

double auc(const std::vector<int>& positive, const std::vector<double>& score) {
  require(positive.size() == score.size(), "auc: sizes differ");
  // Average ranks of the scores (ties share their mean rank), then the Mann-Whitney U of the positives.
  const size_t n = score.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return score[a] < score[b]; });
  std::vector<double> rank(n);
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j + 1 < n && score[order[j + 1]] == score[order[i]]) ++j;
    for (size_t t = i; t <= j; ++t) rank[order[t]] = 0.5 * double(i + j) + 1.0;
    i = j + 1;
  }
  double n_pos = 0, sum = 0;
  for (size_t i = 0; i < n; ++i)
    if (positive[i]) {
      n_pos += 1;
      sum += rank[i];
    }
  const double n_neg = double(n) - n_pos;
  if (n_pos == 0 || n_neg == 0) return kNaN;
  return (sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg);
}

double auc_ovr(const std::vector<int>& truth, const std::vector<double>& scores, int n_classes) {
  require(scores.size() == truth.size() * size_t(n_classes), "auc_ovr: scores are not [n, n_classes]");
  if (n_classes == 2) {
    std::vector<int> pos(truth.size());
    std::vector<double> s(truth.size());
    for (size_t i = 0; i < truth.size(); ++i) {
      pos[i] = truth[i] == 1;
      s[i] = scores[i * 2 + 1] - scores[i * 2];
    }
    return auc(pos, s);
  }
  double sum = 0;
  int counted = 0;
  for (int c = 0; c < n_classes; ++c) {
    std::vector<int> pos(truth.size());
    std::vector<double> s(truth.size());
    for (size_t i = 0; i < truth.size(); ++i) {
      pos[i] = truth[i] == c;
      s[i] = scores[i * size_t(n_classes) + size_t(c)];
    }
    const double a = auc(pos, s);
    if (std::isfinite(a)) {
      sum += a;
      ++counted;
    }
  }
  return counted ? sum / counted : kNaN;
}

double pearson(const double* a, const double* b, int64_t n, int64_t sa, int64_t sb) {
  if (n < 2) return kNaN;
  double ma = 0, mb = 0;
  for (int64_t i = 0; i < n; ++i) {
    ma += a[i * sa];
    mb += b[i * sb];
  }
  ma /= double(n);
  mb /= double(n);
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double x = a[i * sa] - ma, y = b[i * sb] - mb;
    ab += x * y;
    aa += x * x;
    bb += y * y;
  }
  if (aa <= 0 || bb <= 0) return kNaN;
  return ab / std::sqrt(aa * bb);
}

double r2(const double* t, const double* p, int64_t n, int64_t st, int64_t sp) {
  if (n < 2) return kNaN;
  double m = 0;
  for (int64_t i = 0; i < n; ++i) m += t[i * st];
  m /= double(n);
  double res = 0, tot = 0;
  for (int64_t i = 0; i < n; ++i) {
    res += (t[i * st] - p[i * sp]) * (t[i * st] - p[i * sp]);
    tot += (t[i * st] - m) * (t[i * st] - m);
  }
  if (tot <= 0) return kNaN;
  return 1.0 - res / tot;
}

std::vector<int> identification_ranks(const std::vector<double>& predicted, const std::vector<double>& candidates,
                                      const std::vector<int>& target, int d, bool cosine) {
  const int64_t n = int64_t(target.size()), m = int64_t(candidates.size()) / d;
  require(int64_t(predicted.size()) == n * d && int64_t(candidates.size()) == m * d,
          "identification_ranks: sizes do not match");
  auto similarity = [&](const double* a, const double* b) {
    if (!cosine) return pearson(a, b, d);
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < d; ++i) {
      ab += a[i] * b[i];
      aa += a[i] * a[i];
      bb += b[i] * b[i];
    }
    return (aa > 0 && bb > 0) ? ab / std::sqrt(aa * bb) : kNaN;
  };
  std::vector<int> ranks(size_t(n), 0);
  for (int64_t i = 0; i < n; ++i) {
    require(target[size_t(i)] >= 0 && target[size_t(i)] < m, "identification_ranks: target out of range");
    std::vector<double> s(static_cast<size_t>(m));
    for (int64_t c = 0; c < m; ++c) {
      s[size_t(c)] = similarity(&predicted[size_t(i * d)], &candidates[size_t(c * d)]);
      if (!std::isfinite(s[size_t(c)])) s[size_t(c)] = -2;  // a constant vector matches nothing
    }
    const double own = s[size_t(target[size_t(i)])];
    int r = 0;
    for (int64_t c = 0; c < m; ++c) r += s[size_t(c)] > own;
    ranks[size_t(i)] = r;
  }
  return ranks;
}

double top_k(const std::vector<int>& ranks, int k) {
  if (ranks.empty()) return kNaN;
  int64_t hit = 0;
  for (int r : ranks) hit += r < k;
  return double(hit) / double(ranks.size());
}

MeanSpread mean_spread(const std::vector<double>& values) {
  MeanSpread out;
  double s = 0;
  for (double v : values)
    if (std::isfinite(v)) {
      s += v;
      ++out.n;
    }
  if (out.n == 0) return {kNaN, kNaN, 0};
  out.mean = s / out.n;
  double q = 0;
  for (double v : values)
    if (std::isfinite(v)) q += (v - out.mean) * (v - out.mean);
  out.sd = out.n > 1 ? std::sqrt(q / (out.n - 1)) : 0.0;
  return out;
}

void Ridge::fit(const std::vector<double>& x, const std::vector<double>& y, int64_t n, int d, int k, double alpha,
                const std::vector<double>& weights) {
  require(n >= 1 && d >= 1 && k >= 1, "ridge: empty problem");
  require(int64_t(x.size()) == n * d && int64_t(y.size()) == n * k, "ridge: x or y has the wrong size");
  require(weights.empty() || int64_t(weights.size()) == n, "ridge: weights have the wrong size");
  require(alpha > 0, "ridge: alpha must be positive");
  d_ = d, k_ = k, alpha_ = alpha;
  std::vector<double> w(size_t(n), 1.0);
  if (!weights.empty()) w = weights;
  double wsum = 0;
  for (double v : w) wsum += v;
  // Weighted means and scales.
  mean_.assign(size_t(d), 0.0);
  scale_.assign(size_t(d), 1.0);
  std::vector<double> ymean(size_t(k), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int j = 0; j < d; ++j) mean_[size_t(j)] += w[size_t(i)] * x[size_t(i * d + j)];
    for (int c = 0; c < k; ++c) ymean[size_t(c)] += w[size_t(i)] * y[size_t(i * k + c)];
  }
  for (auto& v : mean_) v /= wsum;
  for (auto& v : ymean) v /= wsum;
  std::vector<double> var(size_t(d), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int j = 0; j < d; ++j) {
      const double c = x[size_t(i * d + j)] - mean_[size_t(j)];
      var[size_t(j)] += w[size_t(i)] * c * c;
    }
  for (int j = 0; j < d; ++j) {
    const double sd = std::sqrt(var[size_t(j)] / wsum);
    scale_[size_t(j)] = sd > 1e-12 ? sd : 1.0;
  }
  // Z = sqrt(w) * standardised x, T = sqrt(w) * centred y.
  std::vector<double> z(size_t(n * d)), t(size_t(n * k));
  for (int64_t i = 0; i < n; ++i) {
    const double sw = std::sqrt(w[size_t(i)]);
    for (int j = 0; j < d; ++j)
      z[size_t(i * d + j)] = sw * (x[size_t(i * d + j)] - mean_[size_t(j)]) / scale_[size_t(j)];
    for (int c = 0; c < k; ++c) t[size_t(i * k + c)] = sw * (y[size_t(i * k + c)] - ymean[size_t(c)]);
  }
  w_.assign(size_t(d) * k, 0.0);
  if (d <= n) {  // (Z^T Z + alpha I) W = Z^T T
    std::vector<double> a(size_t(d) * d, 0.0), rhs(size_t(d) * k, 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const double* zi = &z[size_t(i * d)];
      for (int p = 0; p < d; ++p) {
        const double v = zi[p];
        if (v == 0) continue;
        double* ap = &a[size_t(p) * d];
        for (int q = 0; q <= p; ++q) ap[q] += v * zi[q];
        for (int c = 0; c < k; ++c) rhs[size_t(p) * k + c] += v * t[size_t(i * k + c)];
      }
    }
    for (int p = 0; p < d; ++p) {
      a[size_t(p) * d + p] += alpha;
      for (int q = p + 1; q < d; ++q) a[size_t(p) * d + q] = a[size_t(q) * d + p];
    }
    solve_spd(a, rhs, d, k);
    w_ = rhs;
  } else {  // (Z Z^T + alpha I) A = T, W = Z^T A
    std::vector<double> a(size_t(n * n), 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        double s = 0;
        const double* zi = &z[size_t(i * d)];
        const double* zj = &z[size_t(j * d)];
        for (int p = 0; p < d; ++p) s += zi[p] * zj[p];
        a[size_t(i * n + j)] = a[size_t(j * n + i)] = s;
      }
    for (int64_t i = 0; i < n; ++i) a[size_t(i * n + i)] += alpha;
    std::vector<double> dual = t;
    solve_spd(a, dual, n, k);
    for (int64_t i = 0; i < n; ++i)
      for (int p = 0; p < d; ++p)
        for (int c = 0; c < k; ++c) w_[size_t(p) * k + c] += z[size_t(i * d + p)] * dual[size_t(i * k + c)];
  }
  b_ = ymean;
}

std::vector<double> Ridge::predict(const std::vector<double>& x, int64_t n) const {
  require(int64_t(x.size()) == n * d_, "ridge: predict on features of the wrong width");
  std::vector<double> out(size_t(n) * k_);
  for (int64_t i = 0; i < n; ++i) {
    for (int c = 0; c < k_; ++c) out[size_t(i * k_ + c)] = b_[size_t(c)];
    for (int p = 0; p < d_; ++p) {
      const double v = (x[size_t(i * d_ + p)] - mean_[size_t(p)]) / scale_[size_t(p)];
      for (int c = 0; c < k_; ++c) out[size_t(i * k_ + c)] += v * w_[size_t(p) * k_ + c];
    }
  }
  return out;
}

std::vector<double> default_alphas() { return {1e-1, 1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6}; }

std::vector<int> group_folds(const std::vector<int64_t>& group, int k, uint64_t seed) {
  require(k >= 2, "group_folds: need at least 2 folds");
  std::map<int64_t, int64_t> size;
  std::vector<int64_t> groups;  // in order of first appearance
  for (int64_t g : group)
    if (size[g]++ == 0) groups.push_back(g);
  Rng rng(seed);
  for (size_t i = groups.size(); i > 1; --i) std::swap(groups[i - 1], groups[rng.below(i)]);
  const int folds = std::min<int>(k, int(groups.size()));
  std::vector<int64_t> fill(size_t(folds), 0);
  std::map<int64_t, int> fold_of;
  for (int64_t g : groups) {
    const int f = int(std::min_element(fill.begin(), fill.end()) - fill.begin());
    fold_of[g] = f;
    fill[size_t(f)] += size[g];
  }
  std::vector<int> fold(group.size());
  for (size_t i = 0; i < group.size(); ++i) fold[i] = fold_of[group[i]];
  return fold;
}

std::vector<int64_t> purged_train_rows(const std::vector<int>& fold, int test_fold, const std::vector<int64_t>& series,
                                       const std::vector<int64_t>& start, const std::vector<int64_t>& end) {
  const size_t n = fold.size();
  require(series.size() == n && start.size() == n && end.size() == n, "purged_train_rows: sizes differ");
  std::map<int64_t, std::vector<std::pair<int64_t, int64_t>>> test_spans;
  for (size_t i = 0; i < n; ++i)
    if (fold[i] == test_fold) test_spans[series[i]].push_back({start[i], end[i]});
  std::vector<int64_t> rows;
  for (size_t i = 0; i < n; ++i) {
    if (fold[i] == test_fold) continue;
    bool overlaps = false;
    auto it = test_spans.find(series[i]);
    if (it != test_spans.end())
      for (const auto& [s, e] : it->second) overlaps |= start[i] < e && s < end[i];
    if (!overlaps) rows.push_back(int64_t(i));
  }
  return rows;
}

std::vector<double> take_rows(const std::vector<double>& m, int width, const std::vector<int64_t>& rows) {
  std::vector<double> out(rows.size() * size_t(width));
  for (size_t r = 0; r < rows.size(); ++r)
    std::copy_n(&m[size_t(rows[r]) * size_t(width)], width, &out[r * size_t(width)]);
  return out;
}

Ridge fit_ridge_cv(const std::vector<double>& x, const std::vector<double>& y, int d, int k,
                   const std::vector<int64_t>& rows, const std::vector<int64_t>& group,
                   const std::vector<int64_t>& series, const std::vector<int64_t>& start,
                   const std::vector<int64_t>& end, const InnerCv& cv, const std::vector<double>& weights) {
  require(!rows.empty(), "ridge: no training rows");
  auto pick = [&](const std::vector<int64_t>& v) {
    std::vector<int64_t> out;
    for (int64_t r : rows) out.push_back(v[size_t(r)]);
    return out;
  };
  auto pick_w = [&](const std::vector<int64_t>& sub) {
    std::vector<double> out;
    if (weights.empty()) return out;
    for (int64_t r : sub) out.push_back(weights[size_t(r)]);
    return out;
  };
  const std::vector<int64_t> g = pick(group);
  const std::set<int64_t> distinct(g.begin(), g.end());
  double best_alpha = cv.alphas[cv.alphas.size() / 2];
  if (distinct.size() >= 2 && cv.alphas.size() > 1) {
    const std::vector<int> fold = group_folds(g, cv.k_inner, cv.seed);
    const int folds = *std::max_element(fold.begin(), fold.end()) + 1;
    const std::vector<int64_t> s = pick(series), b = pick(start), e = pick(end);
    std::vector<double> err(cv.alphas.size(), 0.0);
    for (int f = 0; f < folds; ++f) {
      std::vector<int64_t> train_local = purged_train_rows(fold, f, s, b, e), test_local;
      for (size_t i = 0; i < fold.size(); ++i)
        if (fold[i] == f) test_local.push_back(int64_t(i));
      if (train_local.empty() || test_local.empty()) continue;
      std::vector<int64_t> train_rows, test_rows;
      for (int64_t i : train_local) train_rows.push_back(rows[size_t(i)]);
      for (int64_t i : test_local) test_rows.push_back(rows[size_t(i)]);
      const auto xt = take_rows(x, d, train_rows), yt = take_rows(y, k, train_rows);
      const auto xv = take_rows(x, d, test_rows), yv = take_rows(y, k, test_rows);
      for (size_t a = 0; a < cv.alphas.size(); ++a) {
        Ridge r;
        r.fit(xt, yt, int64_t(train_rows.size()), d, k, cv.alphas[a], pick_w(train_rows));
        const auto p = r.predict(xv, int64_t(test_rows.size()));
        for (size_t i = 0; i < p.size(); ++i) err[a] += (p[i] - yv[i]) * (p[i] - yv[i]);
      }
    }
    best_alpha = cv.alphas[size_t(std::min_element(err.begin(), err.end()) - err.begin())];
  }
  Ridge r;
  r.fit(take_rows(x, d, rows), take_rows(y, k, rows), int64_t(rows.size()), d, k, best_alpha, pick_w(rows));
  return r;
}

std::vector<double> code_classes(const std::vector<int>& y, int n_classes) {
  std::vector<double> out(y.size() * size_t(n_classes), -1.0);
  for (size_t i = 0; i < y.size(); ++i) {
    require(y[i] >= 0 && y[i] < n_classes, "code_classes: class out of range");
    out[i * size_t(n_classes) + size_t(y[i])] = 1.0;
  }
  return out;
}

std::vector<int> argmax_rows(const std::vector<double>& scores, int64_t n, int k) {
  std::vector<int> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    out[size_t(i)] = int(std::max_element(&scores[size_t(i * k)], &scores[size_t(i * k)] + k) - &scores[size_t(i * k)]);
  return out;
}

namespace {
// The regularised incomplete beta function I_x(a, b) by its continued fraction (modified Lentz), using the symmetry
// I_x(a, b) = 1 - I_{1-x}(b, a) where the fraction converges slowly.
double incomplete_beta(double a, double b, double x) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  if (x > (a + 1) / (a + b + 2)) return 1 - incomplete_beta(b, a, 1 - x);
  const double front = std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) +
                                b * std::log1p(-x)) / a;
  const double tiny = 1e-300;
  double f = 1, c = 1, d = 0;
  for (int i = 0; i <= 400; ++i) {
    const int m = i / 2;
    double num;
    if (i == 0) num = 1;
    else if (i % 2 == 0) num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
    else num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1));
    d = 1 + num * d;
    d = std::abs(d) < tiny ? tiny : d;
    d = 1 / d;
    c = 1 + num / c;
    c = std::abs(c) < tiny ? tiny : c;
    const double cd = c * d;
    f *= cd;
    if (std::abs(1 - cd) < 1e-15) break;
  }
  return front * (f - 1);
}

// P(T <= t) for Student's t with df degrees of freedom.
double student_t_cdf(double t, double df) {
  const double tail = 0.5 * incomplete_beta(df / 2, 0.5, df / (df + t * t));
  return t >= 0 ? 1 - tail : tail;
}
}  // namespace

double student_t_quantile(double p, double df) {
  require(p > 0 && p < 1 && df > 0, "student_t_quantile: p ", p, " df ", df);
  if (p < 0.5) return -student_t_quantile(1 - p, df);
  double lo = 0, hi = 1;
  while (student_t_cdf(hi, df) < p) hi *= 2;
  for (int i = 0; i < 200 && hi - lo > 1e-13 * std::max(1.0, hi); ++i) {
    const double mid = 0.5 * (lo + hi);
    (student_t_cdf(mid, df) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

PairedInterval paired_t_interval(const std::vector<double>& differences, double level) {
  const MeanSpread ms = mean_spread(differences);
  PairedInterval out;
  out.mean = ms.mean, out.sd = ms.sd, out.n = ms.n;
  if (ms.n < 2) {
    out.low = out.high = std::numeric_limits<double>::quiet_NaN();
    return out;
  }
  const double half = student_t_quantile(0.5 + level / 2, ms.n - 1) * ms.sd / std::sqrt(double(ms.n));
  out.low = ms.mean - half, out.high = ms.mean + half;
  return out;
}

void symmetric_eigen(std::vector<double>& a, int n, std::vector<double>* values, std::vector<double>* vectors) {
  std::vector<double> v(size_t(n) * n, 0.0);  // columns: the eigenvectors as the rotations accumulate
  for (int i = 0; i < n; ++i) v[size_t(i) * n + i] = 1;
  const auto at = [&](int i, int j) -> double& { return a[size_t(i) * n + j]; };
  double norm = 0;
  for (double x : a) norm += x * x;
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (int i = 0; i < n; ++i)
      for (int j = i + 1; j < n; ++j) off += at(i, j) * at(i, j);
    if (off <= 1e-30 * norm || off == 0) break;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) {
        if (at(p, q) == 0) continue;
        // The rotation that zeroes a_pq: tan(theta) = t, the smaller root of t^2 + 2 t theta - 1 = 0.
        const double theta = (at(q, q) - at(p, p)) / (2 * at(p, q));
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < n; ++k) {  // a <- a J (columns p, q)
          const double akp = at(k, p), akq = at(k, q);
          at(k, p) = c * akp - s * akq;
          at(k, q) = s * akp + c * akq;
        }
        for (int k = 0; k < n; ++k) {  // a <- J^T a (rows p, q)
          const double apk = at(p, k), aqk = at(q, k);
          at(p, k) = c * apk - s * aqk;
          at(q, k) = s * apk + c * aqk;
        }
        for (int k = 0; k < n; ++k) {
          const double vkp = v[size_t(k) * n + p], vkq = v[size_t(k) * n + q];
          v[size_t(k) * n + p] = c * vkp - s * vkq;
          v[size_t(k) * n + q] = s * vkp + c * vkq;
        }
      }
  }
  std::vector<int> order(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) order[size_t(i)] = i;
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return at(x, x) > at(y, y); });
  values->assign(size_t(n), 0.0);
  vectors->assign(size_t(n) * n, 0.0);
  for (int r = 0; r < n; ++r) {
    const int i = order[size_t(r)];
    (*values)[size_t(r)] = at(i, i);
    for (int k = 0; k < n; ++k) (*vectors)[size_t(r) * n + k] = v[size_t(k) * n + i];
  }
}

}  // namespace bfm::launch::eval
