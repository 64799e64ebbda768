// A corpus opened for reading: shards, global run numbering, summary.
#include "io/corpus.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "base/error.h"

namespace bfm::io {

Corpus::Corpus(const std::string& dir, const std::vector<std::string>& files) {
  first_run_.push_back(0);
  for (const auto& name : files) {
    shards_.push_back(std::make_unique<ShardReader>((std::filesystem::path(dir) / name).string()));
    const auto& s = *shards_.back();
    require(s.n_parcels() == shards_.front()->n_parcels(), s.path(), ": ", s.n_parcels(), " parcels, but ",
            shards_.front()->path(), " has ", shards_.front()->n_parcels());
    first_run_.push_back(first_run_.back() + static_cast<int64_t>(s.runs().size()));
  }
}

std::pair<int64_t, int64_t> Corpus::locate(int64_t global_run) const {
  require(global_run >= 0 && global_run < n_runs(), "run ", global_run, " is outside the corpus's ", n_runs(),
          " runs");
  const auto it = std::upper_bound(first_run_.begin(), first_run_.end(), global_run);
  const int64_t shard = (it - first_run_.begin()) - 1;
  return {shard, global_run - first_run_[static_cast<size_t>(shard)]};
}

CorpusSummary Corpus::summary() const {
  CorpusSummary c;
  c.shards = n_shards();
  bool age = false, sex = false, diagnosis = false;
  std::vector<std::string> scores;
  for (const auto& s : shards_) {
    const auto& h = s->header();
    c.parcels = h.n_parcels;
    c.atlases.insert(h.atlas);
    c.stimulus |= h.stimulus_dim > 0;
    c.labels |= h.labels;
    for (int64_t r = 0; r < static_cast<int64_t>(s->runs().size()); ++r) {
      const Run& run = s->runs()[static_cast<size_t>(r)];
      auto& st = c.studies[run.study];
      st.subjects.insert(run.subject);
      st.runs += 1;
      st.timepoints += run.length;
      st.hours += static_cast<double>(run.length) * run.tr / 3600.0;
      st.trs.insert(std::round(run.tr * 1e6) / 1e6);
      if (!run.task.empty()) st.tasks.insert(run.task);
      if (!run.site.empty()) st.sites.insert(run.site);
      c.runs += 1;
      c.timepoints += run.length;
      c.hours += static_cast<double>(run.length) * run.tr / 3600.0;
    }
    for (const auto& sub : s->subjects()) {
      c.subjects.insert(sub.id);
      age |= !std::isnan(sub.age);
      sex |= !sub.sex.empty();
      diagnosis |= !sub.diagnosis.empty();
      for (size_t k = 0; k < sub.scores.size() && k < h.score_names.size(); ++k)
        if (!std::isnan(sub.scores[k]) &&
            std::find(scores.begin(), scores.end(), h.score_names[k]) == scores.end())
          scores.push_back(h.score_names[k]);
    }
  }
  if (age) c.traits.push_back("age");
  if (sex) c.traits.push_back("sex");
  if (diagnosis) c.traits.push_back("diagnosis");
  c.traits.insert(c.traits.end(), scores.begin(), scores.end());
  return c;
}

}  // namespace bfm::io
