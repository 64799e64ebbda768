// The outer cross-validation of the stimulus tasks (cv.h).
#include "launch/eval/cv.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "base/hash.h"
#include "base/stopwatch.h"
#include "runtime/progress.h"

namespace bfm::launch::eval {

namespace {

// The outer folds of one subject: `mine` its trials (indices into the per-trial arrays, in time order), kept whole by
// their group; per fold the test trials and the training trials left after the purge of windows overlapping a test
// window (in time order).
struct SubjectFold {
  std::vector<int64_t> train, test;
};
std::vector<SubjectFold> subject_folds(const std::vector<int64_t>& mine, const std::vector<int64_t>& group_of,
                                       const std::vector<int64_t>& series_of, const std::vector<int64_t>& start_of,
                                       const std::vector<int64_t>& end_of, int k, uint64_t seed) {
  std::vector<int64_t> group, series, start, end;
  for (int64_t i : mine) {
    group.push_back(group_of[size_t(i)]);
    series.push_back(series_of[size_t(i)]);
    start.push_back(start_of[size_t(i)]);
    end.push_back(end_of[size_t(i)]);
  }
  const std::vector<int> fold = group_folds(group, k, seed);
  const int folds = *std::max_element(fold.begin(), fold.end()) + 1;
  std::vector<SubjectFold> out(static_cast<size_t>(folds));
  for (int f = 0; f < folds; ++f) {
    for (int64_t i : purged_train_rows(fold, f, series, start, end)) out[size_t(f)].train.push_back(mine[size_t(i)]);
    for (size_t i = 0; i < fold.size(); ++i)
      if (fold[i] == f) out[size_t(f)].test.push_back(mine[i]);
  }
  return out;
}

// The first ceil(q * n) training trials in time (at least 2): a shorter scan of the new subject.
std::vector<int64_t> first_fraction(const std::vector<int64_t>& train, double q) {
  const size_t keep = std::min(train.size(), std::max<size_t>(2, size_t(std::ceil(q * double(train.size())))));
  return std::vector<int64_t>(train.begin(), train.begin() + static_cast<std::ptrdiff_t>(keep));
}

}  // namespace

TrialCv trial_cv(const EvalData& data, const EvalOptions& options, RankResults& out) {
  const int64_t n_trials = int64_t(data.trials.size());
  TrialCv cv;
  cv.seed = options.seed;
  cv.group.resize(size_t(n_trials));
  cv.series.resize(size_t(n_trials));
  cv.start.resize(size_t(n_trials));
  cv.end.resize(size_t(n_trials));
  std::map<int, std::set<int>> runs_with_trials;
  for (const auto& t : data.trials) runs_with_trials[t.subject].insert(t.run);
  for (int64_t i = 0; i < n_trials; ++i) {
    const EvalTrial& t = data.trials[size_t(i)];
    const bool by_run = options.cv_unit == "run" && runs_with_trials[t.subject].size() >= 2;
    if (options.cv_unit == "run" && !by_run && data.subjects[size_t(t.subject)].held_out)
      out.note("cross-validation by run: subjects with one task run are cross-validated by stimulus");
    cv.group[size_t(i)] = by_run ? -1 - int64_t(t.run) : t.stimulus;
    cv.series[size_t(i)] = int64_t(t.subject) * 1000000 + t.run;
    cv.start[size_t(i)] = t.onset;
    cv.end[size_t(i)] = t.onset + data.window;
  }
  cv.trials_of.resize(data.subjects.size());
  for (int64_t i = 0; i < n_trials; ++i) cv.trials_of[size_t(data.trials[size_t(i)].subject)].push_back(i);
  return cv;
}

Ridge TrialCv::fit_ridge(const std::vector<double>& x, const std::vector<double>& y, int d, int k,
                         const std::vector<int64_t>& rows) const {
  InnerCv inner;
  inner.seed = seed;
  return fit_ridge_cv(x, y, d, k, rows, group, series, start, end, inner);
}

void TrialCv::trials_of_subjects(const std::vector<int>& subjects, std::vector<int64_t>* rows,
                                 std::vector<int64_t>* group_of) const {
  for (int s : subjects)
    for (int64_t i : trials_of[size_t(s)]) {
      rows->push_back(i);
      group_of->push_back(s);
    }
}

void cross_validate(const TrialCv& cv, const EvalScope& scope, const std::string& what, size_t min_test,
                    const std::string& too_few, RankResults& out, const std::function<void(const CvSplit&)>& each) {
  auto one_subject = [&](int s) {
    const std::vector<int64_t>& mine = cv.trials_of[size_t(s)];
    if (mine.size() < 4) {
      if (!too_few.empty()) out.note(too_few);
      return;
    }
    // Seeded by the subject's id, not its place among the subjects read: its folds do not depend on the others.
    const auto folds = subject_folds(mine, cv.group, cv.series, cv.start, cv.end, scope.options.folds,
                                     scope.options.seed ^ mix64(fnv1a64(scope.data.subjects[size_t(s)].id)));
    for (int f = 0; f < int(folds.size()); ++f) {
      const std::vector<int64_t>& test = folds[size_t(f)].test;
      const std::vector<int64_t>& train_all = folds[size_t(f)].train;
      if (train_all.empty() || test.size() < min_test) continue;
      for (double q : scope.options.fractions) {
        const std::vector<int64_t> train = first_fraction(train_all, q);
        each(CvSplit{scope.data.subjects[size_t(s)].id, f, q, train, test});
      }
    }
  };
  const std::vector<int> held = scope.my_held();
  Stopwatch clock;
  double logged = 0;
  for (size_t done = 1; done <= held.size(); ++done) {
    one_subject(held[done - 1]);
    // Rank 0's progress through its share (the ranks' shares differ by at most one subject).
    const double t = clock.seconds();
    if (t - logged >= 15 && done < held.size()) {
      logged = t;
      scope.log("eval: " + what + ": " + std::to_string(done) + " of " + std::to_string(held.size()) +
                " held-out subjects" + (scope.comm.size() > 1 ? " (rank 0's share)" : "") + " in " +
                runtime::format_duration(t) + ", ETA " +
                runtime::format_duration(t / double(done) * double(held.size() - done)));
    }
  }
}

}  // namespace bfm::launch::eval
