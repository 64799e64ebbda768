// metrics.jsonl, the run's metrics (docs/TRAINING.md, "Outputs"): one JSON object a line, written by rank 0 of bfm
// pretrain as it goes and restored from the training checkpoint on resume. Every line has "split" ("train",
// "validation") and "step"; train lines add "loss" and each objective's loss, "lr", "grad_norm", "step_s",
// "samples_per_s", "data_wait_s", "comm_s", "elapsed_s"; validation lines the held-out losses. A non-finite value is
// written as null. Its writer (MetricsLog) and its reader (read_metrics) are both here.
#pragma once

#include <cstddef>
#include <fstream>
#include <istream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace bfm::launch {

// Appends lines to a metrics file (when a path is given) and keeps the text so far, which training checkpoints store.
class MetricsLog {
 public:
  // path "" (or a rank other than 0): no file, only the text. `restored` (from a checkpoint) starts both.
  MetricsLog(const std::string& path, const std::string& restored);
  void append(const nlohmann::json& line);
  std::string text() const { return so_far_.str(); }

 private:
  std::ofstream file_;
  std::ostringstream so_far_;
};

// The values of one split ("train", "validation"): key -> step -> value, keys in the order first seen.
struct SplitMetrics {
  std::vector<std::string> keys;
  std::map<std::string, std::map<double, double>> values;
  size_t lines = 0;

  bool has(const std::string& key) const { return values.count(key) > 0; }
  void add(const std::string& key, double step, double v) {
    if (!has(key)) keys.push_back(key);
    values[key][step] = v;
  }
};

// Reads metrics lines from f; path names them in errors. A last line without its newline is still being written and
// is skipped; any other line that is not a JSON object with a "split" and a numeric "step" is an error naming the
// file and line; a file without training lines too. A line that repeats a step (a resumed run) replaces the
// earlier values.
std::map<std::string, SplitMetrics> read_metrics(std::istream& f, const std::string& path);

// The last line of a split in metrics text, as JSON (null when there is none; lines that are not JSON are passed
// over).
nlohmann::json last_metrics_line(const std::string& jsonl, const std::string& split);

}  // namespace bfm::launch
