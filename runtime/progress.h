// The one logging path: log_line, and the progress line training prints
// (step, losses, throughput, ETA) on rank 0.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "base/stopwatch.h"

namespace bfm::runtime {

// "1h02m", "3m05s", "12s"
std::string format_duration(double seconds);

// Writes one line to stderr, prefixed with "bfm: ". Every human-facing message goes through here.
void log_line(const std::string& line);

struct ProgressFields {
  int64_t step = 0, total_steps = 0;
  std::vector<std::pair<std::string, double>> losses;  // ("mae", 0.91), ...
  double lr = 0, grad_norm = 0;
  double samples_per_s = 0, tokens_per_s = 0;
  double elapsed_s = 0;
  double eta_s = -1;        // < 0: from elapsed_s and the steps done (a run that started at step 0)
  double data_wait_s = -1;  // >= 0: time spent waiting for data so far, shown as a share of elapsed
  double comm_s = -1;       // >= 0: time blocked in gradient communication so far, likewise
};
// "step   120/300 | loss 0.8123 mae 0.8123 | lr 8.1e-04 | |g| 0.42 | 512 samples/s 65.5k tok/s | data 2% comm 11% |
//  0m12s, ETA 0m18s" (the data/comm part only when given)
std::string format_progress(const ProgressFields& fields);

}  // namespace bfm::runtime
