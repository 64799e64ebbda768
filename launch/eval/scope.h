// What every task of one bfm eval run reads, and what it writes on its rank. EvalScope: the data, the options, the
// ranks, and who is evaluated (the held-out subjects of this part) and learned from (the pre-training subjects).
// RankResults: the result rows, prediction lines, notes and encoding map sums one rank finds as the tasks run;
// gather.h brings the ranks' together.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "launch/eval/data.h"
#include "launch/eval/evaluate.h"
#include "runtime/comm.h"

namespace bfm::launch::eval {

// The pre-training subjects whose labels a population method may use, for one K of options.labelled.
struct LabelledSet {
  int k = -1;               // -1: every pre-training subject
  std::string suffix;       // what the methods' names carry: "" or "@K" (tasks.h)
  std::vector<int> subjects;  // indices into data.subjects, in corpus order
};
// One per options.labelled: every pre-training (not held-out) subject for -1; for K, the first K of them in the order
// a Fisher-Yates shuffle with options.labelled_seed gives (so a smaller K's are among a larger one's). Throws
// bfm::Error where K exceeds the pre-training subjects.
std::vector<LabelledSet> labelled_sets(const EvalData& data, const EvalOptions& options);

struct EvalScope {
  // Splits data.subjects into held-out (this part's, options.part of options.parts) and pre-training subjects.
  EvalScope(const EvalData& data, const EvalOptions& options, runtime::Communicator& comm);

  const EvalData& data;
  const EvalOptions& options;
  runtime::Communicator& comm;
  std::vector<int> held;        // the held-out subjects this part evaluates (indices into data.subjects)
  std::vector<int> held_all;    // every held-out subject (the subject tasks test on them all)
  std::vector<int> population;  // the pre-training subjects
  std::vector<LabelledSet> labelled;  // whose labels the population methods use, per K (labelled_sets)
  // Per stimulus (data.stimuli): 1 where a trial of a pre-training subject showed it. A held-out subject's trial of a
  // stimulus with 0 is of a novel stimulus, one that no population method or pre-training subject in memory saw.
  std::vector<char> seen_stimuli;

  bool wants(const std::string& task) const;
  // This rank's share of `held`: every comm.size()-th from comm.rank().
  std::vector<int> my_held() const;
  // A progress line on rank 0 (options.verbose).
  void log(const std::string& line) const;
};

struct RankResults {
  std::vector<ResultRow> rows;
  std::map<std::string, std::vector<std::string>> predictions;  // predictions file (a task) -> CSV lines
  std::vector<std::string> notes;                               // what was skipped and why, each once
  // encoding at fraction 1: per method the per-parcel sums of r over this rank's subject x folds, and their count
  std::map<std::string, std::vector<double>> encoding_sum;
  std::map<std::string, double> encoding_count;

  void add(const std::string& task, const std::string& method, double fraction, const std::string& subject, int fold,
           const std::string& metric, double value);
  void note(const std::string& line);
};

// A number as a predictions file writes it: 17 significant digits (round-trips), "nan" when not finite.
std::string csv_value(double v);
// The columns every predictions line starts with: method, fraction, subject, fold.
std::string prediction_key(const std::string& method, double fraction, const std::string& subject, int fold);

}  // namespace bfm::launch::eval
