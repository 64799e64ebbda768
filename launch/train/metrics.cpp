#include "launch/train/metrics.h"

#include <cmath>

#include "base/error.h"

namespace bfm::launch {

MetricsLog::MetricsLog(const std::string& path, const std::string& restored) {
  if (!path.empty()) {
    file_.open(path, std::ios::trunc);
    require(static_cast<bool>(file_), path, ": cannot write");
    file_ << restored << std::flush;
  }
  so_far_ << restored;
}

void MetricsLog::append(const nlohmann::json& j) {
  const std::string line = j.dump() + "\n";
  so_far_ << line;
  if (file_.is_open()) file_ << line << std::flush;
}

std::map<std::string, SplitMetrics> read_metrics(std::istream& f, const std::string& path) {
  std::map<std::string, SplitMetrics> splits;
  std::string line;
  for (int64_t number = 1; std::getline(f, line); ++number) {
    const bool unterminated = f.eof();
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      if (unterminated) break;  // the writer is still on this line
      std::string why = e.what();
      if (why.find("] ") != std::string::npos) why.erase(0, why.find("] ") + 2);  // "[json.exception...] "
      fail(path, ":", number, ": not a JSON line: ", why);
    }
    require(j.is_object(), path, ":", number, ": expected a JSON object, got ", j.type_name());
    require(j.contains("split") && j["split"].is_string(), path, ":", number, ": no \"split\" string");
    require(j.contains("step") && j["step"].is_number(), path, ":", number, ": no numeric \"step\"");
    const double step = j["step"].get<double>();
    SplitMetrics& split = splits[j["split"].get<std::string>()];
    ++split.lines;
    for (const auto& [key, value] : j.items()) {
      if (key == "step" || key == "split") continue;
      if (value.is_number())
        split.add(key, step, value.get<double>());
      else if (value.is_null())  // a non-finite value, written by nlohmann as null: a gap in the line
        split.add(key, step, std::nan(""));
    }
  }
  require(f.eof(), path, ": read failed");
  require(splits.count("train") && splits["train"].lines > 0, path,
          ": no training lines (\"split\": \"train\"), nothing to plot");
  return splits;
}


nlohmann::json last_metrics_line(const std::string& jsonl, const std::string& split) {
  nlohmann::json last;
  std::istringstream in(jsonl);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.value("split", "") == split) last = j;
  }
  return last;
}

}  // namespace bfm::launch
