// The outer cross-validation of the stimulus tasks, one driver for decoding (category, embedding, retrieval) and
// encoding alike (docs/EVALUATION.md, "Protocol"): within each held-out subject, k folds that keep a stimulus (or,
// with --cv run, a run) whole; training trials whose window overlaps a test window in the same run purged; and of
// each fold's training trials the first fraction in time, for the few-shot curves. The inner cross-validation that
// chooses ridge's penalty uses the same groups and the same purge.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "launch/eval/data.h"
#include "launch/eval/scope.h"
#include "launch/eval/stats.h"

namespace bfm::launch::eval {

// The trials of a corpus as the cross-validation sees them; per trial (index into EvalData::trials): its group (its
// stimulus, or -1 - run when cross-validating by run), its series (subject and run) and its window [start, end).
struct TrialCv {
  std::vector<int64_t> group, series, start, end;
  std::vector<std::vector<int64_t>> trials_of;  // per subject: its trials, in time order
  uint64_t seed = 0;

  // Ridge fitted on the trials `rows`, its penalty chosen by inner cross-validation over them (grouped, purged).
  Ridge fit_ridge(const std::vector<double>& x, const std::vector<double>& y, int d, int k,
                  const std::vector<int64_t>& rows) const;
  // The trials of `subjects` (rows) and each one's subject (group): what a population ridge learns from.
  void trials_of_subjects(const std::vector<int>& subjects, std::vector<int64_t>* rows,
                          std::vector<int64_t>* group) const;
};

// The cross-validation unit is the stimulus, or (options.cv_unit "run") the run for a subject with trials in at least
// two runs; a held-out subject with one task run falls back to stimuli, with a note in out.
TrialCv trial_cv(const EvalData& data, const EvalOptions& options, RankResults& out);

// One outer split: a subject's fold at one fraction of its training trials.
struct CvSplit {
  const std::string& subject_id;      // EvalSubject::id
  int fold = 0;
  double fraction = 1;
  const std::vector<int64_t>& train;  // the first `fraction` of the fold's training trials after the purge, in time
  const std::vector<int64_t>& test;   // the fold's test trials
};

// Calls each(split) for this rank's held-out subjects (scope.my_held()) with at least 4 trials, each of their folds
// with training trials and at least min_test test trials, and each of options.fractions, in that order. A subject
// with fewer than 4 trials is skipped, with the note too_few in out where it is not empty. Rank 0 logs its progress
// through its subjects (`what`: the task), with an ETA, every 15 s or so.
void cross_validate(const TrialCv& cv, const EvalScope& scope, const std::string& what, size_t min_test,
                    const std::string& too_few, RankResults& out, const std::function<void(const CvSplit&)>& each);

}  // namespace bfm::launch::eval
