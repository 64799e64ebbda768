// fMRIPrep's confound regressors for bfm convert (--confounds, --scrub): which columns, where the file is, and one
// run's regressors and kept volumes read from it. The regression itself is io/run_preprocess.h (one least squares
// with the detrending line).
//
// The file: beside the preprocessed BOLD, the *_desc-confounds_timeseries.tsv (older fMRIPrep:
// *_desc-confounds_regressors.tsv) whose entities, desc aside, are a subset of the scan's (fMRIPrep leaves out space
// and res); the most specific wins. Cells: 'n/a' (fMRIPrep's first row of derivatives and of framewise_displacement)
// is 0. A file with another number of rows than the scan's volumes, a missing column or a non-numeric cell is a
// one-line bfm::Error naming the file and line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bfm::io {

// --confounds none|motion6|motion24|acompcor|FILE.json ({"columns": [names...]}) -> the column names, in the
// design's order; "none" -> empty. A JSON file that is not such an object is an error naming it.
std::vector<std::string> confound_columns(const std::string& spec);

// The confounds file of the scan at `scan_path` (see above); "" when there is none.
std::string find_confounds_file(const std::string& scan_path);

struct RunConfounds {
  std::string path;               // the TSV read
  int64_t n_columns = 0;          // C
  std::vector<double> values;     // [T, C] time-major, n/a = 0
  std::vector<uint8_t> keep;      // [T] 1 = kept; empty when not scrubbing
  int64_t kept = 0;               // volumes kept (T when not scrubbing)
};

// Reads `columns` of the confounds file for a scan of n_volumes volumes and, when fd_threshold > 0, which volumes
// have framewise_displacement <= fd_threshold (kept). Errors name the file and line.
RunConfounds read_run_confounds(const std::string& path, const std::vector<std::string>& columns, int64_t n_volumes,
                                double fd_threshold);

}  // namespace bfm::io
