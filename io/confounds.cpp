// fMRIPrep confounds for bfm convert (confounds.h).
#include "io/confounds.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/bids.h"
#include "io/text_table.h"

namespace bfm::io {

namespace fs = std::filesystem;

std::vector<std::string> confound_columns(const std::string& spec) {
  static const char* axes[] = {"trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"};
  std::vector<std::string> c;
  if (spec.empty() || spec == "none") return c;
  if (spec == "motion6" || spec == "motion24") {
    for (const char* a : axes) c.emplace_back(a);
    if (spec == "motion24")
      for (const char* suffix : {"_derivative1", "_power2", "_derivative1_power2"})
        for (const char* a : axes) c.push_back(std::string(a) + suffix);
    return c;
  }
  if (spec == "acompcor") {
    for (int i = 0; i < 5; ++i) c.push_back("a_comp_cor_0" + std::to_string(i));
    return c;
  }
  require(spec.ends_with(".json"), "--confounds ", spec,
          ": not none, motion6, motion24, acompcor or a FILE.json with {\"columns\": [names...]}");
  std::ifstream in(spec);
  require(in.good(), spec, ": no such file (--confounds)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(spec, ": not JSON (", e.what(), ")");
  }
  require(j.is_object() && j.contains("columns") && j["columns"].is_array() && !j["columns"].empty(), spec,
          ": needs {\"columns\": [names...]} with at least one name");
  for (const auto& name : j["columns"]) {
    require(name.is_string(), spec, ": a column name is not a string: ", name.dump());
    c.push_back(name.get<std::string>());
  }
  return c;
}

std::string find_confounds_file(const std::string& scan_path) {
  const fs::path scan(scan_path);
  BidsName s = parse_bids_name(scan.filename().string());
  s.entities.erase("desc");
  std::string best;
  size_t best_entities = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(scan.parent_path(), ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || !name.ends_with(".tsv")) continue;
    BidsName c = parse_bids_name(name);
    if ((c.suffix != "timeseries" && c.suffix != "regressors") || !c.entities.count("desc") ||
        c.entities.at("desc") != "confounds")
      continue;
    c.entities.erase("desc");
    bool subset = true;
    for (const auto& [k, v] : c.entities) subset = subset && s.entities.count(k) && s.entities.at(k) == v;
    // The most specific wins; between equals, the current name (timeseries) over the older one (regressors).
    if (subset && (best.empty() || c.entities.size() > best_entities ||
                   (c.entities.size() == best_entities && c.suffix == "timeseries"))) {
      best = e.path().string();
      best_entities = c.entities.size();
    }
  }
  return best;
}

RunConfounds read_run_confounds(const std::string& path, const std::vector<std::string>& columns, int64_t n_volumes,
                                double fd_threshold) {
  const TextTable t = read_text_table(path);
  RunConfounds r;
  r.path = path;
  r.n_columns = static_cast<int64_t>(columns.size());
  const auto rows = static_cast<int64_t>(t.rows.size());
  require(rows == n_volumes, path, ":", t.lines.empty() ? 1 : t.lines.back(), ": ", rows, " rows of confounds, but ",
          "the scan has ", n_volumes, " volumes");
  std::vector<int> at;
  for (const auto& name : columns) {
    at.push_back(t.column(name));
    require(at.back() >= 0, path, ":1: no column '", name, "' (asked for by --confounds)");
  }
  r.values.assign(static_cast<size_t>(rows * r.n_columns), 0.0);
  for (size_t i = 0; i < t.rows.size(); ++i)
    for (size_t c = 0; c < at.size(); ++c)
      if (!is_missing(t.rows[i][static_cast<size_t>(at[c])]))
        r.values[i * at.size() + c] = t.number(i, at[c]);
  r.kept = rows;
  if (fd_threshold > 0) {
    const int fd = t.column("framewise_displacement");
    require(fd >= 0, path, ":1: no column 'framewise_displacement' (asked for by --scrub)");
    r.keep.assign(static_cast<size_t>(rows), 1);
    for (size_t i = 0; i < t.rows.size(); ++i)
      if (!is_missing(t.rows[i][static_cast<size_t>(fd)]) && t.number(i, fd) > fd_threshold) {
        r.keep[i] = 0;
        --r.kept;
      }
  }
  return r;
}

}  // namespace bfm::io
