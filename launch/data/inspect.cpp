#include "launch/data/inspect.h"

#ifdef BFM_WITH_HDF5
#include <algorithm>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "base/error.h"

#include <filesystem>

#include "io/corpus.h"
#include "io/corpus_manifest.h"
#include "runtime/progress.h"
#include "runtime/world.h"

namespace bfm::launch {

namespace {



std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

std::string trs_text(const std::set<double>& trs) {
  std::ostringstream os;
  bool first = true;
  for (double tr : trs) os << (first ? "" : ",") << tr, first = false;
  return os.str();
}

// Reads every row of every row dataset of one shard; returns one line per failure ("file: run r (subject ...): why").
std::vector<std::string> verify_shard(const std::string& path, int64_t& rows_read) {
  std::vector<std::string> failures;
  std::unique_ptr<io::ShardReader> shard;
  try {
    shard = std::make_unique<io::ShardReader>(path);
  } catch (const Error& e) {
    return {e.what()};
  }
  const auto& h = shard->header();
  std::vector<float> buf;
  std::vector<int32_t> labels;
  for (int64_t r = 0; r < static_cast<int64_t>(shard->runs().size()); ++r) {
    const int64_t T = shard->runs()[static_cast<size_t>(r)].length;
    try {
      buf.resize(static_cast<size_t>(T * h.n_parcels));
      shard->read_window(r, 0, T, buf.data());
      // A value that is not finite passes every checksum (it was written so): name its first place in the run.
      const auto bad = std::find_if(buf.begin(), buf.end(), [](float v) { return !std::isfinite(v); });
      if (bad != buf.end()) {
        const int64_t at = bad - buf.begin();
        const int64_t n_bad = std::count_if(buf.begin(), buf.end(), [](float v) { return !std::isfinite(v); });
        std::ostringstream os;
        os << path << ": run " << r << " (subject " << shard->runs()[static_cast<size_t>(r)].subject << "): "
           << n_bad << " non-finite value(s) in /runs/timeseries, the first " << *bad << " at time point "
           << at / h.n_parcels << ", parcel " << at % h.n_parcels;
        failures.push_back(os.str());
      }
      if (h.stimulus_dim > 0) {
        buf.resize(static_cast<size_t>(T * h.stimulus_dim));
        shard->read_stimulus(r, 0, T, buf.data());
      }
      if (h.labels) {
        labels.resize(static_cast<size_t>(T));
        shard->read_labels(r, 0, T, labels.data());
      }
      if (!h.stimulus_ids.empty()) {
        labels.resize(static_cast<size_t>(T));
        shard->read_stimulus_index(r, 0, T, labels.data());
      }
      rows_read += T;
    } catch (const Error& e) {
      failures.push_back(e.what());
    }
  }
  return failures;
}

// Every rank's strings, concatenated on rank 0 (in rank order); other ranks get an empty list.
std::vector<std::string> gather_lines(const std::vector<std::string>& mine) {
  const auto& w = runtime::world();
  if (w.size == 1) return mine;
#ifdef BFM_WITH_MPI
  std::string packed;
  for (const auto& s : mine) packed += s + '\n';
  int n = static_cast<int>(packed.size());
  std::vector<int> sizes(static_cast<size_t>(w.size)), offsets(static_cast<size_t>(w.size));
  MPI_Gather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, 0, w.comm);
  int total = 0;
  for (int r = 0; r < w.size; ++r) offsets[static_cast<size_t>(r)] = total, total += sizes[static_cast<size_t>(r)];
  std::string all(static_cast<size_t>(w.rank == 0 ? total : 0), '\0');
  MPI_Gatherv(packed.data(), n, MPI_CHAR, all.data(), sizes.data(), offsets.data(), MPI_CHAR, 0, w.comm);
  std::vector<std::string> lines;
  std::istringstream is(all);
  for (std::string line; std::getline(is, line);) lines.push_back(line);
  return lines;
#else
  return mine;
#endif
}

// What the corpus's time points are annotated with: per label value its name, time points and trials (maximal
// stretches of one label within a run), and the stimuli (the table's size, and how many of them some time point shows).
struct LabelCounts {
  std::map<int32_t, std::pair<int64_t, int64_t>> by_label;  // value -> (time points, trials)
  std::vector<std::string> names;                           // of the first shard that has them
  int64_t stimuli = 0, stimulus_dim = 0, stimuli_shown = 0;
};

LabelCounts count_labels(const io::Corpus& corpus) {
  LabelCounts c;
  std::set<std::string> shown;
  std::vector<int32_t> rows;
  for (int64_t i = 0; i < corpus.n_shards(); ++i) {
    const io::ShardReader& shard = corpus.shard(i);
    const io::ShardHeader& h = shard.header();
    if (c.names.empty()) c.names = h.label_names;
    c.stimuli = std::max<int64_t>(c.stimuli, static_cast<int64_t>(h.stimulus_ids.size()));
    c.stimulus_dim = std::max(c.stimulus_dim, h.stimulus_dim);
    for (int64_t r = 0; r < static_cast<int64_t>(shard.runs().size()); ++r) {
      const int64_t T = shard.runs()[static_cast<size_t>(r)].length;
      rows.resize(static_cast<size_t>(T));
      if (h.labels) {
        shard.read_labels(r, 0, T, rows.data());
        for (int64_t t = 0; t < T; ++t) {
          const int32_t v = rows[static_cast<size_t>(t)];
          if (v < 0) continue;
          auto& [points, trials] = c.by_label[v];
          ++points;
          if (t == 0 || rows[static_cast<size_t>(t - 1)] != v) ++trials;
        }
      }
      if (!h.stimulus_ids.empty()) {
        shard.read_stimulus_index(r, 0, T, rows.data());
        for (int32_t v : rows)
          if (v >= 0 && static_cast<size_t>(v) < h.stimulus_ids.size()) shown.insert(h.stimulus_ids[size_t(v)]);
      }
    }
  }
  for (size_t v = 0; v < c.names.size(); ++v) c.by_label[static_cast<int32_t>(v)];  // named but never on: 0
  c.stimuli_shown = static_cast<int64_t>(shown.size());
  return c;
}

std::string label_name(const LabelCounts& c, int32_t value) {
  return static_cast<size_t>(value) < c.names.size() ? c.names[static_cast<size_t>(value)] : std::to_string(value);
}

}  // namespace

int inspect(const InspectOptions& o) {
  const auto& w = runtime::world();
  const io::CorpusManifest m = io::read_corpus_manifest(o.dir);
  int failed = 0;
  nlohmann::json report;
  if (w.rank == 0) {
    const io::Corpus corpus(o.dir, m.shard_files);
    const io::CorpusSummary s = corpus.summary();
    report = {{"corpus", o.dir}, {"shards", s.shards}, {"studies", s.studies.size()}, {"subjects", s.subjects.size()},
              {"runs", s.runs}, {"timepoints", s.timepoints}, {"hours", s.hours}, {"parcels", s.parcels},
              {"atlases", std::vector<std::string>(s.atlases.begin(), s.atlases.end())}, {"traits", s.traits},
              {"stimulus_embeddings", s.stimulus}, {"stimulus_labels", s.labels},
              {"split", {{"seed", m.split_seed}, {"train", m.train.size()}, {"validation", m.validation.size()},
                         {"test", m.test.size()}}}};
    const LabelCounts labels = count_labels(corpus);
    report["labels"] = nlohmann::json::array();
    for (const auto& [value, n] : labels.by_label)
      report["labels"].push_back({{"value", value}, {"name", label_name(labels, value)}, {"timepoints", n.first},
                                  {"trials", n.second}});
    report["label_names"] = labels.names;
    report["stimuli"] = {{"count", labels.stimuli}, {"dim", labels.stimulus_dim}, {"shown", labels.stimuli_shown}};
    for (const auto& [name, st] : s.studies)
      report["per_study"][name.empty() ? "(none)" : name] = {
          {"subjects", st.subjects.size()}, {"runs", st.runs},  {"timepoints", st.timepoints},
          {"hours", st.hours},               {"trs", st.trs},   {"tasks", st.tasks}, {"sites", st.sites}};
    // The manifest's counts should describe the shards it lists.
    if (m.n_runs != s.runs || m.n_timepoints != s.timepoints ||
        m.n_subjects != static_cast<int64_t>(s.subjects.size()))
      fail(m.path, ": counts (", m.n_subjects, " subjects, ", m.n_runs, " runs, ", m.n_timepoints,
           " time points) differ from its shards' (", s.subjects.size(), ", ", s.runs, ", ", s.timepoints, ")");
    if (!o.json) {
      std::cout << "corpus " << o.dir << ": " << s.shards << " shards, " << s.studies.size() << " studies, "
                << s.subjects.size() << " subjects, " << s.runs << " runs, " << s.timepoints << " TRs, "
                << std::fixed << std::setprecision(2) << s.hours << " hours, " << s.parcels << " parcels (atlas "
                << join({s.atlases.begin(), s.atlases.end()}) << ")\n";
      std::cout << "split (seed " << m.split_seed << "): train " << m.train.size() << ", validation "
                << m.validation.size() << ", test " << m.test.size() << " subjects\n";
      std::cout << "traits: " << (s.traits.empty() ? "none" : join(s.traits))
                << (s.stimulus ? "; stimulus embeddings" : "") << (s.labels ? "; stimulus labels" : "") << "\n";
      if (!labels.by_label.empty()) {
        std::cout << "labels (time points, trials):";
        for (const auto& [value, n] : labels.by_label)
          std::cout << " " << label_name(labels, value) << " " << n.first << " (" << n.second << ")";
        std::cout << "\n";
      }
      if (labels.stimuli > 0)
        std::cout << "stimuli: " << labels.stimuli << " in the table (" << labels.stimuli_shown << " shown), "
                  << (labels.stimulus_dim > 0 ? "features of dimension " + std::to_string(labels.stimulus_dim)
                                              : std::string("no features"))
                  << "\n";
      std::cout << "\n";
      std::cout << std::left << std::setw(24) << "study" << std::right << std::setw(10) << "subjects"
                << std::setw(8) << "runs" << std::setw(7) << "sites" << std::setw(10) << "TRs" << std::setw(9)
                << "hours" << "  "
                << std::left << std::setw(14) << "TR (s)" << "tasks\n";
      for (const auto& [name, st] : s.studies)
        std::cout << std::left << std::setw(24) << (name.empty() ? "(none)" : name) << std::right << std::setw(10)
                  << st.subjects.size() << std::setw(8) << st.runs << std::setw(7) << st.sites.size()
                  << std::setw(10) << st.timepoints
                  << std::setw(9) << std::setprecision(2) << st.hours << "  " << std::left << std::setw(14)
                  << std::defaultfloat << trs_text(st.trs) << join({st.tasks.begin(), st.tasks.end()}) << "\n"
                  << std::fixed;
      std::cout.flush();
    }
  }
  if (o.verify) {
    Stopwatch clock;
    std::vector<std::string> mine;
    int64_t rows = 0;
    for (size_t i = static_cast<size_t>(w.rank); i < m.shard_files.size(); i += static_cast<size_t>(w.size)) {
      auto f = verify_shard((std::filesystem::path(o.dir) / m.shard_files[i]).string(), rows);
      mine.insert(mine.end(), f.begin(), f.end());
    }
    const auto failures = gather_lines(mine);
    if (w.rank == 0) {
      for (const auto& f : failures) runtime::log_line("verify: " + f);
      failed = failures.empty() ? 0 : 1;
      report["verify"] = {{"failures", failures}, {"ok", failures.empty()}};
      const std::string line = "verify: " + std::to_string(m.shard_files.size()) + " shards read on " +
                               std::to_string(w.size) + " rank(s) in " + runtime::format_duration(clock.seconds()) +
                               ": " + (failures.empty() ? "every chunk's checksum is good, every value finite"
                                                        : std::to_string(failures.size()) + " failure(s)");
      if (o.json) runtime::log_line(line);
      else std::cout << "\n" << line << std::endl;
    }
  }
  if (w.rank == 0 && o.json) std::cout << report.dump(2) << std::endl;
#ifdef BFM_WITH_MPI
  if (w.size > 1) MPI_Bcast(&failed, 1, MPI_INT, 0, w.comm);
#endif
  return failed;
}


}  // namespace bfm::launch

#endif  // BFM_WITH_HDF5
