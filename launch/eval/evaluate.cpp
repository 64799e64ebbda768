// bfm eval's protocol (evaluate.h, docs/EVALUATION.md), step by step: the trials as the cross-validation sees them,
// the window features, the decoding tasks with retrieval's zero-shot row, encoding, the subject tasks, then the ranks'
// rows, maps and predictions gathered and summarised. Each step lives in its own file.
#include "launch/eval/evaluate.h"

#include <set>


#include "base/error.h"
#include "launch/eval/cv.h"
#include "launch/eval/decoding.h"
#include "launch/eval/encoding.h"
#include "launch/eval/gather.h"
#include "launch/eval/retrieval.h"
#include "launch/eval/scope.h"
#include "launch/eval/subject_tasks.h"
#include "launch/eval/summary.h"
#include "runtime/progress.h"

namespace bfm::launch::eval {

namespace {

// A principal-component basis as CSV lines (pca.csv, probe_basis.csv), header first: the `mean` row (its variance
// column the total variance), then component_c with its variance and unit vector over the columns prefix0, prefix1...
std::vector<std::string> basis_table(const std::vector<double>& mean, double total, const std::vector<double>& variance,
                                     const std::vector<double>& basis, const std::string& prefix) {
  const size_t width = mean.size();
  std::vector<std::string> lines;
  std::string header = "row,variance";
  for (size_t p = 0; p < width; ++p) header += "," + prefix + std::to_string(p);
  lines.push_back(header);
  for (int c = -1; c < int(variance.size()); ++c) {
    std::string line = c < 0 ? "mean," + csv_value(total)
                             : "component_" + std::to_string(c) + "," + csv_value(variance[size_t(c)]);
    for (size_t p = 0; p < width; ++p) (line += ",") += csv_value(c < 0 ? mean[p] : basis[size_t(c) * width + p]);
    lines.push_back(line);
  }
  return lines;
}

// A fitted linear map as CSV lines (stimridge.csv), header first: `mean` and `scale` of the inputs (bias column
// empty), then output_c with its bias and its weights over the standardised inputs: y_c = b_c + sum_p w_pc (x_p -
// mean_p) / scale_p.
std::vector<std::string> linear_table(const Linear& map) {
  std::vector<std::string> lines;
  std::string header = "row,bias";
  for (int p = 0; p < map.d; ++p) header += ",input_" + std::to_string(p);
  lines.push_back(header);
  for (const auto& [name, values] : {std::pair{"mean", &map.mean}, std::pair{"scale", &map.scale}}) {
    std::string line = std::string(name) + ",";
    for (double v : *values) (line += ",") += csv_value(v);
    lines.push_back(line);
  }
  for (int c = 0; c < map.k; ++c) {
    std::string line = "output_" + std::to_string(c) + "," + csv_value(map.b[size_t(c)]);
    for (int p = 0; p < map.d; ++p) (line += ",") += csv_value(map.w[size_t(p) * map.k + size_t(c)]);
    lines.push_back(line);
  }
  return lines;
}

// The share of the total variance the kept components hold (config.json's explained_variance).
double explained_fraction(const std::vector<double>& variance, double total) {
  double kept = 0;
  for (double v : variance) kept += v;
  return total > 0 ? kept / total : 0.0;
}

}  // namespace

EvalReport evaluate(const EvalData& data, const EvalModels& models, const EvalOptions& options,
                    runtime::Communicator& comm) {
  require(models.pretrained != nullptr, "eval: no pre-trained model");
  const model::ModelConfig& mc = models.pretrained->config();
  require(mc.n_parcels == data.n_parcels, "eval: the checkpoint takes ", mc.n_parcels, " parcels, the corpus ",
          data.corpus, " has ", data.n_parcels, " (another atlas?)");
  require(options.folds >= 2, "eval: need at least 2 folds");
  require(options.cv_unit == "stimulus" || options.cv_unit == "run", "eval: cross-validation unit '", options.cv_unit,
          "' (stimulus | run)");
  for (double f : options.fractions) require(f > 0 && f <= 1, "eval: fraction ", f, " is not in (0, 1]");
  Stopwatch clock;
  const EvalScope scope(data, options, comm);  // who is evaluated (this part's held-out subjects), who learned from
  RankResults mine;                            // what this rank finds

  // Stimulus tasks, within each held-out subject, on the same outer folds.
  PcaBasis pca;
  TokenBasis probe_basis;
  StimulusMap stim_map;
  const TrialFeatures features = trial_features(scope, *models.pretrained, &pca, &probe_basis, &stim_map);
  const TrialCv cv = trial_cv(data, options, mine);
  decode_stimuli(scope, models, cv, features, mine);
  if (scope.wants("retrieval")) zero_shot_retrieval(scope, *models.pretrained, cv, features, mine);
  if (scope.wants("encoding")) encode_stimuli(scope, cv, mine);
  // Subject tasks, across subjects.
  evaluate_subject_tasks(scope, *models.pretrained, mine);

  EvalReport report;
  report.held_out_subjects = int(scope.held.size());
  report.population_subjects = int(scope.population.size());
  report.trials = int64_t(data.trials.size());
  // The category task's chance is one over the categories its trials have: a study may name a label that no trial
  // carries (only zero-length events), which the coding's width (data.n_categories) still counts.
  std::set<int> present;
  for (const EvalTrial& t : data.trials)
    if (t.label >= 0) present.insert(t.label);
  report.n_categories = int(present.size());
  for (const LabelledSet& set : scope.labelled) {
    LabelledGroup g;
    g.k = set.k;
    for (int s : set.subjects) g.subjects.push_back(data.subjects[size_t(s)].id);
    report.labelled.push_back(std::move(g));
  }
  if (pca.components > 0) {
    report.pca = {{"components", pca.components},
                  {"patch_len", pca.patch_len},
                  {"patches", pca.patches},
                  {"subjects", scope.population.size()},
                  {"explained_variance", explained_fraction(pca.variance, pca.total_variance)}};
    report.pca_table = basis_table(pca.mean, pca.total_variance, pca.variance, pca.basis, "parcel_");
  }
  if (probe_basis.components > 0) {
    report.probe_basis = {{"components", probe_basis.components},
                          {"d_model", probe_basis.d_model},
                          {"tokens", probe_basis.tokens},
                          {"explained_variance", explained_fraction(probe_basis.variance, probe_basis.total_variance)}};
    report.probe_table = basis_table(probe_basis.mean, probe_basis.total_variance, probe_basis.variance,
                                     probe_basis.basis, "dim_");
  }
  if (stim_map.trials > 0) {
    report.stimridge = {{"alpha", stim_map.alpha},
                        {"trials", stim_map.trials},
                        {"subjects", stim_map.subjects},
                        {"features", stim_map.map.d},
                        {"stim_dim", stim_map.map.k}};
    report.stimridge_table = linear_table(stim_map.map);
  }
  report.notes = mine.notes;
  report.rows = gather_rows(mine.rows, data, method_names(options.labelled), comm);
  gather_encoding_maps(mine, comm, report);
  summarize(report);
  write_predictions(mine, scope);
  scope.log("eval: done in " + runtime::format_duration(clock.seconds()));
  return report;
}

}  // namespace bfm::launch::eval
