// A corpus opened for reading: its shard files (docs/FORMAT.md), with every run numbered globally in shard order
// (shard 0's runs, then shard 1's...), and a summary of what it holds. manifest.json is parsed in launch/ (JSON is a
// launch/ dependency); this class takes the shard file names that the manifest lists.
#pragma once

#ifdef BFM_WITH_HDF5

#include <cstdint>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/shard_reader.h"

namespace bfm::io {

struct StudySummary {
  std::set<std::string> subjects;
  int64_t runs = 0, timepoints = 0;
  double hours = 0;
  std::set<double> trs;     // distinct TRs in seconds
  std::set<std::string> tasks;
  std::set<std::string> sites;  // distinct non-empty /runs/site values
};

struct CorpusSummary {
  int64_t shards = 0, runs = 0, timepoints = 0, parcels = 0;
  double hours = 0;
  std::set<std::string> subjects;  // distinct ids over all shards
  std::set<std::string> atlases;
  std::map<std::string, StudySummary> studies;  // by study name ("" = unnamed)
  // Traits that at least one subject has a value for: "age", "sex", "diagnosis", then score names.
  std::vector<std::string> traits;
  bool stimulus = false, labels = false;  // some shard has /runs/stim_embedding, /runs/label
};

class Corpus {
 public:
  // Opens dir/file for each file (ShardReader's errors name the file). All shards must have the same n_parcels.
  Corpus(const std::string& dir, const std::vector<std::string>& files);

  int64_t n_shards() const { return static_cast<int64_t>(shards_.size()); }
  const ShardReader& shard(int64_t i) const { return *shards_.at(static_cast<size_t>(i)); }
  int64_t n_runs() const { return first_run_.empty() ? 0 : first_run_.back(); }
  // Global run index -> (shard, run inside that shard). Throws bfm::Error when out of range.
  std::pair<int64_t, int64_t> locate(int64_t global_run) const;
  CorpusSummary summary() const;

 private:
  std::vector<std::unique_ptr<ShardReader>> shards_;
  std::vector<int64_t> first_run_;  // [n_shards + 1] prefix sums of run counts
};

}  // namespace bfm::io

#endif  // BFM_WITH_HDF5
