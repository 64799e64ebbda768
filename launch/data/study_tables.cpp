// A study's events, stimuli and participants for bfm convert (study_tables.h).
#include "launch/data/study_tables.h"

#if defined(BFM_WITH_HDF5) && defined(BFM_WITH_NIFTI)

#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>

#include "base/error.h"
#include "io/parcellate.h"
#include "io/participants.h"

namespace bfm::launch {

namespace fs = std::filesystem;

namespace {

std::string list_some(const std::vector<std::string>& v, size_t limit = 8) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < limit; ++i) s += (i ? ", " : "") + v[i];
  if (v.size() > limit) s += " and " + std::to_string(v.size() - limit) + " more";
  return s;
}

void read_participants_into(const ConvertOptions& o, const std::vector<io::BidsScan>& scans, StudyTables& t) {
  const fs::path path = fs::path(o.bids) / "participants.tsv";
  if (!fs::is_regular_file(path)) {
    if (!o.diagnosis.empty()) fail(path.string(), ": no such file, but --diagnosis ", o.diagnosis, " asks for it");
    return;
  }
  const io::DiagnosisColumn dx = o.diagnosis.empty() ? io::DiagnosisColumn{} : io::parse_diagnosis_option(o.diagnosis);
  const io::Participants p = io::read_participants(path.string(), dx);
  for (const auto& note : p.notes) t.warnings.push_back(path.string() + ": " + note);
  t.score_names = p.score_names;
  // Subjects' ids are STUDY/sub-XX; match participants by the sub-XX part.
  std::map<std::string, std::string> scanned;  // sub-XX -> STUDY/sub-XX
  for (const auto& s : scans) scanned.emplace(s.subject.substr(s.subject.rfind('/') + 1), s.subject);
  std::vector<std::string> unscanned, unlisted;
  for (const auto& [label, subject] : p.by_label) {
    const auto it = scanned.find(label);
    if (it == scanned.end()) {
      unscanned.push_back(label);
      continue;
    }
    io::Subject s = subject;
    s.id = it->second;
    t.subjects.emplace(s.id, std::move(s));
  }
  for (const auto& [label, id] : scanned)
    if (!p.by_label.count(label)) unlisted.push_back(label);
  if (!unscanned.empty())
    t.warnings.push_back(path.string() + ": " + std::to_string(unscanned.size()) + " participant(s) without scans: " +
                         list_some(unscanned));
  if (!unlisted.empty())
    t.warnings.push_back(path.string() + ": " + std::to_string(unlisted.size()) + " scanned subject(s) not listed, "
                         "their traits are missing: " + list_some(unlisted));
}

}  // namespace

StudyTables read_study_tables(const ConvertOptions& o, const std::vector<io::BidsScan>& scans) {
  StudyTables t;
  std::set<std::string> labels, stimuli;
  bool label_column = false, stimulus_column = false;
  for (const auto& scan : scans) {
    if (scan.events.empty()) continue;
    const io::ScanTiming timing = io::scan_timing(scan.path, scan.tr);
    io::RunEvents ev = io::read_events(scan.events, o.label_column, o.stim_column,
                                       static_cast<double>(timing.n_time) * timing.tr, scan.path);
    label_column = label_column || ev.has_label_column;
    stimulus_column = stimulus_column || ev.has_stimulus_column;
    for (const auto& e : ev.events) {
      if (!e.label.empty()) labels.insert(e.label);
      if (!e.stimulus.empty()) stimuli.insert(e.stimulus);
    }
    t.events.emplace(scan.path, std::move(ev));
  }
  t.label_names.assign(labels.begin(), labels.end());
  if (!t.events.empty() && !label_column)
    t.warnings.push_back("no events file has the label column '" + o.label_column + "' (--label-column): no labels");

  if (!o.stim_features.empty()) {
    const io::StimulusTable table = io::read_stimulus_features(o.stim_features);
    t.stimulus_ids = table.ids;
    t.stimulus_dim = table.dim;
    t.stimulus_features = table.features;
    require(!t.events.empty() && stimulus_column, o.stim_features, ": given by --stim-features, but ",
            t.events.empty() ? std::string("the study has no events files")
                             : "no events file has the stimulus column '" + o.stim_column + "' (--stim-column)");
    int64_t missing = 0;
    std::set<std::string> missing_ids;
    for (const auto& [path, ev] : t.events)
      for (const auto& e : ev.events) {
        if (e.stimulus.empty() || table.index.count(e.stimulus)) continue;
        if (!o.allow_missing_stimuli)
          fail(ev.path, ":", e.line, ": stimulus '", e.stimulus, "' is not in ", o.stim_features,
               " (--allow-missing-stimuli converts such events without a stimulus)");
        ++missing;
        missing_ids.insert(e.stimulus);
      }
    if (missing > 0)
      t.warnings.push_back(std::to_string(missing) + " event(s) show stimuli missing from " + o.stim_features +
                           " (converted without a stimulus): " +
                           list_some(std::vector<std::string>(missing_ids.begin(), missing_ids.end())));
  } else {
    t.stimulus_ids.assign(stimuli.begin(), stimuli.end());
  }
  for (size_t i = 0; i < t.stimulus_ids.size(); ++i)
    t.stimulus_index.emplace(t.stimulus_ids[i], static_cast<int32_t>(i));
  if (!o.bids.empty()) read_participants_into(o, scans, t);

  if (t.annotated()) {
    std::ostringstream os;
    os << "time points annotated from events.tsv (k*TR + the median SliceTiming in [onset, onset + duration)): ";
    if (!t.label_names.empty()) os << t.label_names.size() << " labels from column " << o.label_column;
    if (!t.stimulus_ids.empty())
      os << (t.label_names.empty() ? "" : ", ") << t.stimulus_ids.size() << " stimuli from column " << o.stim_column;
    if (t.stimulus_dim > 0)
      os << " with features " << fs::path(o.stim_features).filename().string() << " (" << t.stimulus_dim << " dims)";
    t.description = os.str();
  }
  return t;
}

RunAnnotations annotate_run(const StudyTables& t, const io::BidsScan& scan, int64_t n_time, double tr) {
  RunAnnotations a;
  const auto n = static_cast<size_t>(n_time);
  const auto S = static_cast<size_t>(t.stimulus_dim);
  a.label.assign(n, -1);
  a.stimulus.assign(n, -1);
  a.embedding.assign(n * S, 0.0f);
  const auto it = t.events.find(scan.path);
  if (it == t.events.end()) return a;
  const io::RunEvents& ev = it->second;
  const std::vector<int64_t> of = io::events_on_grid(ev, n_time, tr, scan.slice_reference);
  for (size_t k = 0; k < n; ++k) {
    if (of[k] < 0) continue;
    const io::TaskEvent& e = ev.events[static_cast<size_t>(of[k])];
    if (!e.label.empty())
      a.label[k] = static_cast<int32_t>(std::lower_bound(t.label_names.begin(), t.label_names.end(), e.label) -
                                        t.label_names.begin());
    if (e.stimulus.empty()) continue;
    const auto id = t.stimulus_index.find(e.stimulus);
    if (id == t.stimulus_index.end()) continue;  // missing from the table, allowed by --allow-missing-stimuli
    const auto s = static_cast<size_t>(id->second);
    a.stimulus[k] = static_cast<int32_t>(s);
    std::copy_n(t.stimulus_features.begin() + static_cast<std::ptrdiff_t>(s * S), S,
                a.embedding.begin() + static_cast<std::ptrdiff_t>(k * S));
  }
  return a;
}

}  // namespace bfm::launch

#endif  // BFM_WITH_HDF5 && BFM_WITH_NIFTI
