#include "io/run_preprocess.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"

namespace bfm::io {

void detrend_linear(std::vector<double>& x, int64_t T, int64_t P) {
  if (T < 2) return;
  // Centred time makes the slope and intercept independent: b = sum(tc x) / sum(tc^2), a = mean(x).
  const double t_mean = 0.5 * static_cast<double>(T - 1);
  double stt = 0;
  for (int64_t t = 0; t < T; ++t) stt += (t - t_mean) * (t - t_mean);
  for (int64_t p = 0; p < P; ++p) {
    double sx = 0, stx = 0;
    for (int64_t t = 0; t < T; ++t) {
      sx += x[t * P + p];
      stx += (t - t_mean) * x[t * P + p];
    }
    const double a = sx / static_cast<double>(T), b = stx / stt;
    for (int64_t t = 0; t < T; ++t) x[t * P + p] -= a + b * (t - t_mean);
  }
}

namespace {

// numpy.percentile's default ('linear'): position q * (n - 1) in the sorted values.
double percentile(std::vector<double>& sorted, double q) {
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

}  // namespace

void scale_columns(std::vector<double>& x, int64_t T, int64_t P, RunScaling scaling) {
  if (scaling == RunScaling::none || T == 0) return;
  std::vector<double> column(static_cast<size_t>(T));
  for (int64_t p = 0; p < P; ++p) {
    for (int64_t t = 0; t < T; ++t) column[t] = x[t * P + p];
    double centre = 0, scale = 0;
    if (scaling == RunScaling::zscore) {
      for (double v : column) centre += v;
      centre /= static_cast<double>(T);
      for (double v : column) scale += (v - centre) * (v - centre);
      scale = std::sqrt(scale / static_cast<double>(T));
    } else {
      std::sort(column.begin(), column.end());
      centre = percentile(column, 0.5);
      scale = (percentile(column, 0.75) - percentile(column, 0.25)) / 1.349;
    }
    // A column whose spread is rounding noise relative to its level is treated as constant.
    const bool constant = !(scale > 1e-12 * std::max(1.0, std::abs(centre)));
    for (int64_t t = 0; t < T; ++t) x[t * P + p] = constant ? 0.0 : (x[t * P + p] - centre) / scale;
  }
}

std::vector<double> resample_linear(const std::vector<double>& x, int64_t T, int64_t P, double tr, double target_tr,
                                    int64_t& K) {
  require(tr > 0 && target_tr > 0, "resample_linear: TR ", tr, " s and target TR ", target_tr, " s must be > 0");
  require(T >= 1, "resample_linear: empty run");
  K = static_cast<int64_t>(std::floor(static_cast<double>(T - 1) * tr / target_tr + 1e-9)) + 1;
  std::vector<double> y(static_cast<size_t>(K * P));
  for (int64_t k = 0; k < K; ++k) {
    const double pos = static_cast<double>(k) * target_tr / tr;  // in source samples
    const int64_t lo = std::min(static_cast<int64_t>(std::floor(pos)), T - 1);
    const int64_t hi = std::min(lo + 1, T - 1);
    const double w = pos - static_cast<double>(lo);
    for (int64_t p = 0; p < P; ++p) y[k * P + p] = (1 - w) * x[lo * P + p] + w * x[hi * P + p];
  }
  return y;
}

void preprocess_run(std::vector<double>& x, int64_t& T, int64_t P, double tr, const RunPreprocess& options) {
  if (options.detrend) detrend_linear(x, T, P);
  if (options.target_tr > 0 && std::abs(options.target_tr - tr) > 1e-9 * tr) {
    int64_t K = 0;
    x = resample_linear(x, T, P, tr, options.target_tr, K);
    T = K;
  }
  scale_columns(x, T, P, options.scaling);
}

}  // namespace bfm::io
