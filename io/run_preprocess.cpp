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

void regress_out(std::vector<double>& x, int64_t T, int64_t P, const std::vector<double>& design, int64_t D) {
  require(static_cast<int64_t>(design.size()) == T * D, "regress_out: design of ", design.size(), " values, not ",
          T, " x ", D);
  // q: the orthonormal basis of the design's span, one column of T values after another.
  std::vector<std::vector<double>> q;
  std::vector<double> v(static_cast<size_t>(T));
  for (int64_t d = 0; d < D; ++d) {
    double norm0 = 0;
    for (int64_t t = 0; t < T; ++t) {
      v[t] = design[t * D + d];
      norm0 += v[t] * v[t];
    }
    for (int pass = 0; pass < 2; ++pass)
      for (const auto& u : q) {
        double dot = 0;
        for (int64_t t = 0; t < T; ++t) dot += u[t] * v[t];
        for (int64_t t = 0; t < T; ++t) v[t] -= dot * u[t];
      }
    double norm = 0;
    for (int64_t t = 0; t < T; ++t) norm += v[t] * v[t];
    if (!(norm > 1e-20 * norm0) || norm == 0) continue;
    norm = std::sqrt(norm);
    for (int64_t t = 0; t < T; ++t) v[t] /= norm;
    q.push_back(v);
  }
  for (int64_t p = 0; p < P; ++p)
    for (const auto& u : q) {
      double dot = 0;
      for (int64_t t = 0; t < T; ++t) dot += u[t] * x[t * P + p];
      for (int64_t t = 0; t < T; ++t) x[t * P + p] -= dot * u[t];
    }
}

void preprocess_run(std::vector<double>& x, int64_t& T, int64_t P, double tr, const RunPreprocess& options) {
  const int64_t C = options.n_confounds;
  require(options.keep.empty() || static_cast<int64_t>(options.keep.size()) == T, "preprocess_run: ",
          options.keep.size(), " scrubbing flags for ", T, " volumes");
  require(static_cast<int64_t>(options.confounds.size()) == T * C, "preprocess_run: ", options.confounds.size(),
          " confound values for ", T, " volumes x ", C, " regressors");
  const bool scrub = !options.keep.empty();
  require(!(scrub && options.target_tr > 0 && std::abs(options.target_tr - tr) > 1e-9 * tr),
          "--scrub and --target-tr exclude each other: scrubbed runs have no regular time grid to resample");
  if (scrub || C > 0) {
    // Kept volumes' rows of x and of the design [confounds, 1, t (centred, when detrend)], then one least squares.
    std::vector<int64_t> rows;
    for (int64_t t = 0; t < T; ++t)
      if (!scrub || options.keep[t]) rows.push_back(t);
    const auto K = static_cast<int64_t>(rows.size());
    const int64_t D = C + 1 + (options.detrend ? 1 : 0);
    double t_mean = 0;
    for (int64_t t : rows) t_mean += static_cast<double>(t) / static_cast<double>(std::max<int64_t>(K, 1));
    std::vector<double> kept(static_cast<size_t>(K * P)), design(static_cast<size_t>(K * D));
    for (int64_t k = 0; k < K; ++k) {
      const int64_t t = rows[k];
      std::copy_n(x.begin() + t * P, P, kept.begin() + k * P);
      std::copy_n(options.confounds.begin() + t * C, C, design.begin() + k * D);
      design[k * D + C] = 1.0;
      if (options.detrend) design[k * D + C + 1] = static_cast<double>(t) - t_mean;
    }
    // Scrubbing alone under --no-detrend only drops volumes.
    if (options.detrend || C > 0) regress_out(kept, K, P, design, D);
    x = std::move(kept);
    T = K;
  } else if (options.detrend) {
    detrend_linear(x, T, P);
  }
  if (options.target_tr > 0 && std::abs(options.target_tr - tr) > 1e-9 * tr) {
    int64_t K = 0;
    x = resample_linear(x, T, P, tr, options.target_tr, K);
    T = K;
  }
  scale_columns(x, T, P, options.scaling);
}

}  // namespace bfm::io
