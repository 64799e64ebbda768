// One 4-D NIfTI scan + one 3-D label atlas -> the scan's parcel time series [T, P]: the library core of
// `bfm convert` (which adds BIDS walking, sidecar TRs, ranks and shards around it).
//
// The atlas may be on any grid. Each scan voxel centre (i, j, k) goes through the scan's affine (sform when its
// code is set, else qform) to world mm, then through the inverse of the atlas's affine to the nearest atlas voxel
// (floor(x + 0.5) per axis); a centre that lands outside the atlas grid or on label 0 belongs to no parcel.
// Parcel p's value at time t is the mean of its voxels' values (scl_slope/scl_inter applied, any datatype).
//
// Decisions, so that every run of a study has the same parcel axis whatever its grid:
// - parcels are ALL nonzero labels of the atlas, ascending. A parcel that no scan voxel reaches (or whose voxels are
//   non-finite at every time point) stays in the output as a column of zeros and is listed in `empty_labels`.
// - a non-finite voxel value (NaN, inf) is left out of its parcel's mean at that time point; how many were left out
//   is reported per parcel. A parcel whose voxels are all non-finite at some time points but not at all of them has
//   no value there: that is an error naming the file, label and time point.
// - errors (bfm::Error) name the file: unreadable or truncated, scan not 4-D (or fewer than 2 time points), atlas not
//   3-D or its labels not non-negative integers, an image with neither sform nor qform, an atlas that no scan voxel
//   with a nonzero label maps into, no usable TR (none given and pixdim[4] not > 0).
// - TR: `ParcellateOptions::tr` when > 0 (the sidecar's RepetitionTime), else pixdim[4] in the header's time units
//   (seconds when the units are unknown; ms and us converted).
// The scan is read a few volumes at a time, so memory stays near one brick list plus the output.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/run_preprocess.h"

namespace bfm::io {

struct ParcellateOptions {
  double tr = 0;            // seconds; > 0 overrides the header (the caller passes the JSON sidecar's TR)
  RunPreprocess preprocess; // detrend, target TR, scaling; RunPreprocess{false, 0, RunScaling::none} gives raw means
  int volumes_per_read = 4;    // volumes decoded per read: memory is about 12 bytes x voxels x this
};

struct ParcelSeries {
  std::vector<int64_t> labels;             // [P] atlas labels, ascending, 0 excluded
  int64_t n_time = 0;                      // T after resampling
  std::vector<float> series;               // [T, P] row-major (time-major), as the shards store runs
  double tr = 0;                           // seconds, of `series` (the target TR when resampled)
  double source_tr = 0;                    // seconds, of the scan
  std::vector<int64_t> voxel_count;        // [P] scan voxels mapped to each parcel
  std::vector<int64_t> nonfinite_values;   // [P] voxel-time values left out of the means for being NaN or inf
  std::vector<int64_t> empty_labels;       // labels whose columns are zeros (no voxels, or no finite value at all)
  int64_t scan_voxels_in_atlas = 0;        // scan voxels that landed on a nonzero label
};

// A scan's number of volumes and TR (`tr` when > 0, else the header's), from its header alone: what bfm convert
// checks a run's events against before it converts anything. Errors as parcellate's.
struct ScanTiming {
  int64_t n_time = 0;
  double tr = 0;
};
ScanTiming scan_timing(const std::string& scan_path, double tr = 0);

ParcelSeries parcellate(const std::string& scan_path, const std::string& atlas_path,
                        const ParcellateOptions& options = {});

}  // namespace bfm::io
