// The encoding task: parcel responses from the stimulus embedding (encoding.h).
#include "launch/eval/encoding.h"

#include <cmath>
#include <map>
#include <memory>

#include "launch/eval/population_ridge.h"
#include "launch/eval/stats.h"
#include "launch/eval/tasks.h"

namespace bfm::launch::eval {

void encode_stimuli(const EvalScope& scope, const TrialCv& cv, RankResults& out) {
  const EvalData& data = scope.data;
  const int64_t n_trials = int64_t(data.trials.size()), T = data.window, P = data.n_parcels, S = data.stim_dim;
  if (S == 0 || n_trials == 0) {
    out.note("encoding: skipped, no stimulus embeddings or no trials");
    return;
  }
  out.note("encoding: the pre-trained brain model has no stimulus-to-brain pathway, so only ridge (per subject) and "
           "ridge_pop (population) run; pre-training cannot help here beyond the population");
  // Targets: each parcel's mean over the trial window. Features: the stimulus embedding.
  std::vector<double> y(size_t(n_trials * P), 0.0), x(size_t(n_trials * S));
  for (int64_t i = 0; i < n_trials; ++i) {
    const EvalTrial& t = data.trials[size_t(i)];
    const EvalRun& r = data.subjects[size_t(t.subject)].runs[size_t(t.run)];
    for (int64_t u = 0; u < T; ++u)
      for (int64_t p = 0; p < P; ++p) y[size_t(i * P + p)] += r.timeseries[size_t((t.onset + u) * P + p)] / double(T);
    for (int64_t j = 0; j < S; ++j) x[size_t(i * S + j)] = data.stimuli[size_t(t.stimulus)][size_t(j)];
  }
  // ridge, then ridge_pop for each K of the label-scarce protocol (none where K = 0: ridge is its form there).
  std::vector<std::string> encoders = {"ridge"};
  std::map<std::string, std::unique_ptr<PopulationRidge>> pop;
  for (const LabelledSet& set : scope.labelled) {
    std::vector<int64_t> pop_rows, pop_group;
    cv.trials_of_subjects(set.subjects, &pop_rows, &pop_group);
    if (pop_rows.size() < 2) continue;
    const std::string method = "ridge_pop" + set.suffix;
    encoders.push_back(method);
    pop[method] = std::make_unique<PopulationRidge>(take_rows(x, int(S), pop_rows), take_rows(y, int(P), pop_rows),
                                                    int(S), int(P), pop_group, default_alphas(), scope.options.seed);
  }
  for (const std::string& method : encoders) {
    out.encoding_sum[method].assign(size_t(P), 0.0);
    out.encoding_count[method] = 0;
  }
  cross_validate(cv, scope, "encoding", 2, "", out, [&](const CvSplit& split) {
    const std::string& sid = split.subject_id;
    const double q = split.fraction;
    const int f = split.fold;
    const auto x_test = take_rows(x, int(S), split.test), y_test = take_rows(y, int(P), split.test);
    const int64_t n = int64_t(split.test.size());
    for (const std::string& method : encoders) {
      const std::vector<double> pred =
          method == "ridge" ? cv.fit_ridge(x, y, int(S), int(P), split.train).predict(x_test, n)
                            : pop.at(method)->fit_with(x, y, split.train).predict(x_test, n);
      std::vector<double> rs, r2s;
      for (int64_t p = 0; p < P; ++p) {
        rs.push_back(pearson(&y_test[size_t(p)], &pred[size_t(p)], n, P, P));
        r2s.push_back(r2(&y_test[size_t(p)], &pred[size_t(p)], n, P, P));
      }
      out.add("encoding", method, q, sid, f, "r", mean_spread(rs).mean);
      out.add("encoding", method, q, sid, f, "r2", mean_spread(r2s).mean);
      if (q == 1.0) {
        for (int64_t p = 0; p < P; ++p)
          if (std::isfinite(rs[size_t(p)])) out.encoding_sum[method][size_t(p)] += rs[size_t(p)];
        out.encoding_count[method] += 1;
      }
      if (!scope.options.predictions_dir.empty() && (q == 1.0 || q == 0.1))
        for (int64_t i = 0; i < n; ++i) {
          std::string line = prediction_key(method, q, sid, f);
          for (int64_t p = 0; p < P; ++p) (line += ",") += csv_value(y_test[size_t(i * P + p)]);
          for (int64_t p = 0; p < P; ++p) (line += ",") += csv_value(pred[size_t(i * P + p)]);
          out.predictions["encoding"].push_back(line);
        }
    }
  });
}

}  // namespace bfm::launch::eval
