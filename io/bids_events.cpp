// Task events on a run's time grid (bids_events.h).
#include "io/bids_events.h"

#include <algorithm>
#include <numeric>
#include <sstream>

#include "base/error.h"
#include "io/text_table.h"

namespace bfm::io {

RunEvents read_events(const std::string& path, const std::string& label_column, const std::string& stimulus_column,
                      double run_seconds, const std::string& run) {
  const TextTable t = read_text_table(path);
  const int onset = t.column("onset"), duration = t.column("duration");
  require(onset >= 0, path, ":1: no 'onset' column (BIDS events need onset and duration, in seconds)");
  require(duration >= 0, path, ":1: no 'duration' column (BIDS events need onset and duration, in seconds)");
  const int label = t.column(label_column), stimulus = t.column(stimulus_column);
  RunEvents out;
  out.path = path;
  out.has_label_column = label >= 0;
  out.has_stimulus_column = stimulus >= 0;
  for (size_t r = 0; r < t.rows.size(); ++r) {
    TaskEvent e;
    e.line = t.lines[r];
    const auto& cells = t.rows[r];
    require(!is_missing(cells[size_t(onset)]), t.where(r), ": onset is missing (n/a)");
    e.onset = t.number(r, onset);
    require(e.onset >= 0, t.where(r), ": onset ", cells[size_t(onset)], " s is negative");
    e.duration = is_missing(cells[size_t(duration)]) ? 0.0 : t.number(r, duration);
    require(e.duration >= 0, t.where(r), ": duration ", cells[size_t(duration)], " s is negative");
    if (run_seconds > 0 && e.onset >= run_seconds) {
      std::ostringstream os;
      os << t.where(r) << ": onset " << cells[size_t(onset)] << " s is at or past the end of the run (" << run_seconds
         << " s: " << run << ")";
      fail(os.str());
    }
    if (label >= 0 && !is_missing(cells[size_t(label)])) e.label = cells[size_t(label)];
    if (stimulus >= 0 && !is_missing(cells[size_t(stimulus)])) e.stimulus = cells[size_t(stimulus)];
    out.events.push_back(std::move(e));
  }
  return out;
}

std::vector<int64_t> events_on_grid(const RunEvents& events, int64_t n_time, double tr, double reference) {
  std::vector<int64_t> of(static_cast<size_t>(n_time), -1);
  // By onset, then line: an event met later in this order covers the earlier ones it overlaps.
  std::vector<size_t> order(events.events.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return events.events[a].onset < events.events[b].onset; });
  for (const size_t i : order) {
    const TaskEvent& e = events.events[i];
    for (int64_t k = 0; k < n_time; ++k) {
      // 1 us of slack: a time point meant to fall on an onset (k * 0.7 against 2.1) must not miss it by rounding.
      const double t = static_cast<double>(k) * tr + reference + kEventSlack;
      if (t >= e.onset && t < e.onset + e.duration) of[static_cast<size_t>(k)] = static_cast<int64_t>(i);
    }
  }
  return of;
}

}  // namespace bfm::io
