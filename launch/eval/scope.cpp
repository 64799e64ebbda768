// What the tasks of one bfm eval run read and write (scope.h).
#include "launch/eval/scope.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "base/error.h"
#include "base/rng.h"
#include "launch/eval/tasks.h"
#include "runtime/progress.h"

namespace bfm::launch::eval {

std::vector<LabelledSet> labelled_sets(const EvalData& data, const EvalOptions& options) {
  std::vector<int> population;
  for (int s = 0; s < int(data.subjects.size()); ++s)
    if (!data.subjects[size_t(s)].held_out) population.push_back(s);
  std::vector<int> order = population;
  Rng rng = Rng::stream(options.labelled_seed, 0x1abe1);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[size_t(rng.below(i))]);
  std::vector<LabelledSet> out;
  for (int k : options.labelled) {
    require(k <= int(population.size()), "eval: --labelled-subjects ", k, ": ", data.corpus, " has ",
            population.size(), " pre-training subjects in memory (--population)");
    LabelledSet set;
    set.k = k;
    set.suffix = labelled_suffix(k);
    set.subjects = k < 0 ? population : std::vector<int>(order.begin(), order.begin() + k);
    std::sort(set.subjects.begin(), set.subjects.end());
    out.push_back(std::move(set));
  }
  return out;
}

EvalScope::EvalScope(const EvalData& data_, const EvalOptions& options_, runtime::Communicator& comm_)
    : data(data_), options(options_), comm(comm_) {
  for (int s = 0; s < int(data.subjects.size()); ++s) (data.subjects[size_t(s)].held_out ? held_all : population).push_back(s);
  require(options.parts >= 1 && options.part >= 0 && options.part < options.parts, "eval: part ", options.part,
          " of ", options.parts, " does not exist");
  for (size_t i = 0; i < held_all.size(); ++i)
    if (int(i % size_t(options.parts)) == options.part) held.push_back(held_all[i]);
  labelled = labelled_sets(data, options);
  seen_stimuli.assign(data.stimuli.size(), 0);
  for (const EvalTrial& t : data.trials)
    if (!data.subjects[size_t(t.subject)].held_out) seen_stimuli[size_t(t.stimulus)] = 1;
}

bool EvalScope::wants(const std::string& task) const {
  return std::find(options.tasks.begin(), options.tasks.end(), task) != options.tasks.end();
}

std::vector<int> EvalScope::my_held() const {
  std::vector<int> out;
  for (size_t hi = size_t(comm.rank()); hi < held.size(); hi += size_t(comm.size())) out.push_back(held[hi]);
  return out;
}

void EvalScope::log(const std::string& line) const {
  if (options.verbose && comm.rank() == 0) runtime::log_line(line);
}

void RankResults::add(const std::string& task, const std::string& method, double fraction, const std::string& subject,
                      int fold, const std::string& metric, double value) {
  rows.push_back({task, method, fraction, subject, fold, metric, value});
}

void RankResults::note(const std::string& line) {
  if (std::find(notes.begin(), notes.end(), line) == notes.end()) notes.push_back(line);
}

std::string csv_value(double v) {
  if (!std::isfinite(v)) return "nan";
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

std::string prediction_key(const std::string& method, double fraction, const std::string& subject, int fold) {
  return method + "," + csv_value(fraction) + "," + subject + "," + std::to_string(fold);
}

}  // namespace bfm::launch::eval
