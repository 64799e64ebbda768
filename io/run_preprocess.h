// Per-run preprocessing of a parcel time series x [T, P] (row-major, time-major), as `bfm convert` applies it to
// every run before it is written to a shard: optional scrubbing (dropping volumes), linear detrend per parcel together
// with any confound regressors in one least squares, optional resampling in time to a target TR, then scaling per
// parcel. Resampling comes before scaling so that the stored run is exactly zero-mean and
// unit-scale on its own time grid. Plain float64 loops; a run is small (hundreds x hundreds).
#pragma once

#include <cstdint>
#include <vector>

namespace bfm::io {

enum class RunScaling {
  none,
  zscore,  // (x - mean) / std, std with ddof 0 (scipy.stats.zscore's default)
  robust,  // (x - median) / (IQR / 1.349): the IQR of a unit normal is 1.349, so Gaussian runs come out as zscore's
};

struct RunPreprocess {
  bool detrend = true;                      // remove the least-squares line a + b t per parcel
  double target_tr = 0;                     // seconds; 0 keeps the run's own time grid
  RunScaling scaling = RunScaling::zscore;
  // Per run (bfm convert --confounds, --scrub): regressors [T, n_confounds] time-major, regressed out of every parcel
  // with the constant (and the line, when detrend) in one least squares; and the volumes kept ([T], 1 = kept; empty
  // keeps all). Dropped volumes are left out of the fit too; the line is over the kept volumes' acquisition indices.
  std::vector<double> confounds{};
  int64_t n_confounds = 0;
  std::vector<uint8_t> keep{};
};

// Removes the least-squares line a + b t (t = 0..T-1) from every column of x [T, P] (scipy.signal.detrend 'linear').
void detrend_linear(std::vector<double>& x, int64_t T, int64_t P);

// Least squares residual of every column of x [T, P] on the columns of design [T, D] (time-major): x - D b with b
// minimising |x - D b| per parcel, by modified Gram-Schmidt (twice) in float64. A design column that is (to 1e-10 of
// its norm) a combination of the ones before it is left out, so a rank-deficient design removes its span as
// numpy.linalg.lstsq would.
void regress_out(std::vector<double>& x, int64_t T, int64_t P, const std::vector<double>& design, int64_t D);

// Scales every column of x [T, P] as `scaling` says. A column that is constant (std or IQR of 0, e.g. a parcel
// with no voxels) is set to 0 instead of being divided by 0.
void scale_columns(std::vector<double>& x, int64_t T, int64_t P, RunScaling scaling);

// Linear interpolation of x [T, P], sampled at t * tr, onto the grid k * target_tr for k = 0..K-1, with
// K = floor((T - 1) * tr / target_tr + 1e-9) + 1 (never extrapolates past the last sample). Returns [K, P].
std::vector<double> resample_linear(const std::vector<double>& x, int64_t T, int64_t P, double tr, double target_tr,
                                    int64_t& K);

// Applies scrubbing, detrend (with the confounds), resampling and scaling in that order; T is updated when the run is
// scrubbed or resampled. Scrubbing and resampling together are refused (the dropped volumes leave no regular grid).
void preprocess_run(std::vector<double>& x, int64_t& T, int64_t P, double tr, const RunPreprocess& options);

}  // namespace bfm::io
