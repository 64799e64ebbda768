// Per-run preprocessing of a parcel time series x [T, P] (row-major, time-major), as `bfm convert` applies it to
// every run before it is written to a shard: linear detrend per parcel, optional resampling in time to a target
// TR, then scaling per parcel. Resampling comes before scaling so that the stored run is exactly zero-mean and
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
};

// Removes the least-squares line a + b t (t = 0..T-1) from every column of x [T, P] (scipy.signal.detrend 'linear').
void detrend_linear(std::vector<double>& x, int64_t T, int64_t P);

// Scales every column of x [T, P] as `scaling` says. A column that is constant (std or IQR of 0, e.g. a parcel
// with no voxels) is set to 0 instead of being divided by 0.
void scale_columns(std::vector<double>& x, int64_t T, int64_t P, RunScaling scaling);

// Linear interpolation of x [T, P], sampled at t * tr, onto the grid k * target_tr for k = 0..K-1, with
// K = floor((T - 1) * tr / target_tr + 1e-9) + 1 (never extrapolates past the last sample). Returns [K, P].
std::vector<double> resample_linear(const std::vector<double>& x, int64_t T, int64_t P, double tr, double target_tr,
                                    int64_t& K);

// Applies detrend, resampling and scaling in that order; T is updated when the run is resampled.
void preprocess_run(std::vector<double>& x, int64_t& T, int64_t P, double tr, const RunPreprocess& options);

}  // namespace bfm::io
