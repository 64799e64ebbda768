// What a BIDS study says besides its scans, for bfm convert: each run's task events, the stimulus feature table and
// participants.tsv, all read and checked by every rank BEFORE anything is written (a bad file stops the conversion
// with one line naming it, and the output folder is left as it was), and turned into the shard's per-time-point
// datasets run by run.
//
// Labels: the names found in the label column of every events file of the study (not only this --part's), sorted
// (byte order), are label values 0, 1, ...: every rank and every part computes the same mapping from the same files.
// Stimuli: the feature table's ids in file order (without --stim-features: the stimulus values of the events,
// sorted) index /stimuli/id; every event's stimulus must be in the table unless --allow-missing-stimuli (then it
// has no stimulus: index -1, a zero embedding). Time grid and overlaps: io/bids_events.h.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/bids.h"
#include "io/bids_events.h"
#include "io/shard.h"
#include "io/stimulus_features.h"
#include "launch/data/convert.h"

namespace bfm::launch {

struct StudyTables {
  std::vector<std::string> label_names;
  std::vector<std::string> stimulus_ids;  // /stimuli/id
  int64_t stimulus_dim = 0;               // S of the feature table; 0 without --stim-features
  std::vector<float> stimulus_features;   // [ids, S]
  std::map<std::string, int32_t> stimulus_index;  // id -> row of stimulus_ids
  std::map<std::string, io::RunEvents> events;   // by scan path; runs without events are absent
  std::map<std::string, io::Subject> subjects;   // traits by subject id ("STUDY/sub-XX")
  std::vector<std::string> score_names;
  std::string description;                // for the shards' preprocessing text ("" without events)
  std::vector<std::string> warnings;      // for rank 0's log

  bool annotated() const { return !label_names.empty() || !stimulus_ids.empty(); }
};

// Reads and checks every events file of `scans`, the feature table and (with --bids) ROOT/participants.tsv. Throws
// bfm::Error with one line naming the file and line of the first problem.
StudyTables read_study_tables(const ConvertOptions& options, const std::vector<io::BidsScan>& scans);

// One run's rows: label [n_time] (-1 none), stimulus [n_time] (-1 none) and embedding [n_time, S] (zeros where none)
// on the time grid of the converted run (n_time points every tr seconds).
struct RunAnnotations {
  std::vector<int32_t> label, stimulus;
  std::vector<float> embedding;
};
RunAnnotations annotate_run(const StudyTables& tables, const io::BidsScan& scan, int64_t n_time, double tr);

}  // namespace bfm::launch
