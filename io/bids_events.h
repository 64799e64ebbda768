// A run's task events (BIDS *_events.tsv) and where they fall on the run's time grid (bfm convert).
//
// Columns: `onset` and `duration` in seconds from the start of the run's first volume (both required), the label
// column (BIDS `trial_type` by default) and the stimulus column (BIDS `stim_file` by default), either of which a file
// may lack; "n/a" is missing. A duration of "n/a" (allowed by BIDS for an unknown length) is taken as 0.
//
// Time grid: the run's time point k (after any resampling, k * tr seconds from the first volume's start) stands for
// the acquisition time k * tr + reference, where reference is the median slice time of the sidecar's SliceTiming
// (0 without it), the instant fMRIPrep's slice-timing correction aligns every slice to. Time point k belongs to the
// event whose [onset, onset + duration) holds that time; where several do, the one with the latest onset (then the
// later line) wins; where none does, to no event. Events are not shifted by the hemodynamic delay: the stored label
// says what was on screen, as bfm synth's corpora do (docs/FORMAT.md).
//
// Errors are one line "FILE:LINE: what" (bfm::Error): no onset or duration column, a value that is not a number, a
// negative onset or duration, an onset at or after the run's end (volumes x TR of the scan). An event that starts
// inside the run and lasts past its end is cut at the end.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bfm::io {

struct TaskEvent {
  double onset = 0, duration = 0;  // seconds
  std::string label, stimulus;     // "" = missing (n/a, or the file has no such column)
  int64_t line = 0;                // in the events file
};

struct RunEvents {
  std::string path;
  bool has_label_column = false, has_stimulus_column = false;
  std::vector<TaskEvent> events;  // in file order
};

// Reads and checks one events file. `run_seconds` > 0: an onset at or after it is an error (the scan's volumes x
// TR); `run` names the scan in that message.
RunEvents read_events(const std::string& path, const std::string& label_column, const std::string& stimulus_column,
                      double run_seconds, const std::string& run);

// Times are compared after adding this to the time point's (seconds), so that rounding (k * 0.7 against an onset of
// 2.1) does not move a boundary: a time point is in [onset, onset + duration) to 1 microsecond.
inline constexpr double kEventSlack = 1e-6;

// For each of the n_time time points k at k * tr + reference seconds, the index into events.events of the event
// that covers it (rule above), or -1.
std::vector<int64_t> events_on_grid(const RunEvents& events, int64_t n_time, double tr, double reference);

}  // namespace bfm::io
