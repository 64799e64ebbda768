// The decoding tasks of bfm eval: category, embedding and retrieval (decoding.h).
#include "launch/eval/decoding.h"

#include <algorithm>
#include <memory>
#include <set>

#include "launch/eval/features.h"
#include "launch/eval/population_ridge.h"
#include "launch/eval/retrieval.h"
#include "launch/eval/stats.h"
#include "launch/eval/tasks.h"
#include "model/placement.h"

namespace bfm::launch::eval {

namespace {

// A decoding target: category's coded classes, or the stimulus embedding (decoded for embedding and retrieval).
struct StimTask {
  std::string name;
  int k = 0;
  bool classes = false;
  std::vector<double> y;  // [n_trials, k] (coded classes or embedding)
};

std::vector<WindowRef> trial_windows(const EvalData& data) {
  std::vector<WindowRef> out;
  for (const auto& t : data.trials) out.push_back({t.subject, t.run, t.onset});
  return out;
}

bool decoding_wanted(const EvalScope& scope) {
  return std::any_of(scope.options.tasks.begin(), scope.options.tasks.end(), [](const std::string& t) {
    return is_task(t) && task_info(t).kind == TaskKind::decoding;
  });
}

// The targets the tasks asked for need, where the corpus has them (a note where it has not).
std::vector<StimTask> decoding_targets(const EvalScope& scope, RankResults& out) {
  const EvalData& data = scope.data;
  const int64_t n_trials = int64_t(data.trials.size()), S = data.stim_dim;
  std::vector<StimTask> stask;
  if (n_trials > 0 && scope.wants("category")) {
    if (data.n_categories >= 2) {
      std::vector<int> lab;
      for (const auto& t : data.trials) lab.push_back(t.label);
      stask.push_back({"category", data.n_categories, true, code_classes(lab, data.n_categories)});
    } else {
      out.note("category: skipped, the corpus has fewer than 2 stimulus categories");
    }
  }
  if (n_trials > 0 && (scope.wants("embedding") || scope.wants("retrieval"))) {
    if (S > 0) {
      std::vector<double> y(size_t(n_trials * S));
      for (int64_t i = 0; i < n_trials; ++i)
        for (int64_t j = 0; j < S; ++j) y[size_t(i * S + j)] = data.stimuli[size_t(data.trials[size_t(i)].stimulus)][size_t(j)];
      stask.push_back({"embedding", int(S), false, std::move(y)});
    } else {
      out.note("embedding, retrieval: skipped, the corpus has no stimulus embeddings");
    }
  }
  if (n_trials == 0 && decoding_wanted(scope)) out.note("stimulus tasks: skipped, the held-out subjects have no stimulus trial");
  return stask;
}

// category on a split's test trials: accuracy, balanced accuracy, AUC; pred are the class scores [n_test, k].
void score_category(const EvalScope& scope, const StimTask& task, const std::string& method, const CvSplit& split,
                    const std::vector<double>& pred, RankResults& out) {
  const int64_t n = int64_t(split.test.size());
  const auto add = [&](const char* metric, double value) {
    out.add(task.name, method, split.fraction, split.subject_id, split.fold, metric, value);
  };
  std::vector<int> truth, guess = argmax_rows(pred, n, task.k);
  for (int64_t r : split.test) truth.push_back(scope.data.trials[size_t(r)].label);
  add("accuracy", accuracy(truth, guess));
  add("balanced_accuracy", balanced_accuracy(truth, guess));
  add("auc", auc_ovr(truth, pred, task.k));
  if (!scope.options.predictions_dir.empty())
    for (int64_t i = 0; i < n; ++i) {
      std::string line = prediction_key(method, split.fraction, split.subject_id, split.fold) + "," +
                         std::to_string(truth[size_t(i)]) + "," + std::to_string(guess[size_t(i)]);
      for (int c = 0; c < task.k; ++c) (line += ",") += csv_value(pred[size_t(i * task.k + c)]);
      out.predictions[task.name].push_back(line);
    }
}

// embedding (r, R² per dimension, mean over dimensions) and retrieval on a split's test trials; pred is the decoded
// embedding [n_test, S], y_test the true one.
void score_embedding(const EvalScope& scope, const StimTask& task, const std::string& method, const CvSplit& split,
                     const std::vector<double>& y_test, const std::vector<double>& pred, RankResults& out) {
  const int64_t n = int64_t(split.test.size());
  const std::string& sid = split.subject_id;
  const double q = split.fraction;
  const int f = split.fold;
  std::vector<double> rs, r2s;
  for (int c = 0; c < task.k; ++c) {
    rs.push_back(pearson(&y_test[size_t(c)], &pred[size_t(c)], n, task.k, task.k));
    r2s.push_back(r2(&y_test[size_t(c)], &pred[size_t(c)], n, task.k, task.k));
  }
  if (scope.wants("embedding")) {
    out.add("embedding", method, q, sid, f, "r", mean_spread(rs).mean);
    out.add("embedding", method, q, sid, f, "r2", mean_spread(r2s).mean);
  }
  if (scope.wants("retrieval")) add_retrieval_rows(scope, method, q, sid, f, pred, split.test, out);
  if (!scope.options.predictions_dir.empty())
    for (int64_t i = 0; i < n; ++i) {
      std::string line = prediction_key(method, q, sid, f) + "," +
                         std::to_string(scope.data.trials[size_t(split.test[size_t(i)])].stimulus);
      for (int c = 0; c < task.k; ++c) (line += ",") += csv_value(y_test[size_t(i * task.k + c)]);
      for (int c = 0; c < task.k; ++c) (line += ",") += csv_value(pred[size_t(i * task.k + c)]);
      out.predictions["embedding"].push_back(line);
    }
}

// StimulusMap (decoding.h): the population's stimulus trials, each subject a group of the penalty's cross-validation.
StimulusMap fit_stimulus_map(const EvalScope& scope, const FeatureSet& raw) {
  const EvalData& data = scope.data;
  const std::set<int> population(scope.population.begin(), scope.population.end());
  const int64_t S = data.stim_dim;
  std::vector<double> x, y;
  std::vector<int64_t> group;
  for (size_t i = 0; i < data.trials.size(); ++i) {
    const EvalTrial& t = data.trials[i];
    if (!population.count(t.subject)) continue;
    x.insert(x.end(), raw.x.begin() + int64_t(i) * raw.d, raw.x.begin() + int64_t(i + 1) * raw.d);
    for (int64_t j = 0; j < S; ++j) y.push_back(data.stimuli[size_t(t.stimulus)][size_t(j)]);
    group.push_back(t.subject);
  }
  StimulusMap out;
  if (group.size() < 2) return out;
  const PopulationRidge ridge(x, y, raw.d, int(S), group, default_alphas(), scope.options.seed);
  out.map = ridge.fit_with(x, y, {});  // the population alone
  out.alpha = ridge.alpha();
  out.trials = int64_t(group.size());
  out.subjects = int(std::set<int64_t>(group.begin(), group.end()).size());
  return out;
}

}  // namespace

TrialFeatures trial_features(const EvalScope& scope, const model::BrainModel& pretrained, PcaBasis* pca,
                             TokenBasis* probe_basis, StimulusMap* stim_map) {
  const EvalData& data = scope.data;
  const model::ModelConfig& mc = pretrained.config();
  const std::vector<WindowRef> windows = trial_windows(data);
  const int64_t n_trials = int64_t(windows.size()), T = data.window, P = data.n_parcels;
  const int L = mc.patch_len;
  TrialFeatures features;
  if (decoding_wanted(scope) && n_trials > 0) {
    features["raw"] = {int((T / L) * P), raw_features(data, windows, L)};
    if (!scope.population.empty()) {
      // Components: as many as --pca-components asks, else the fewest explaining 90 % of the variance, at most the
      // width the encoder gives a time patch (d_model).
      const int n_max = int(std::min<int64_t>(mc.d_model, P));
      const int asked = scope.options.pca_components;
      *pca = asked > 0 ? fit_pca(data, scope.population, L, int(std::min<int64_t>(asked, P)))
                       : fit_pca(data, scope.population, L, n_max, 0.9);
      scope.log("eval: pca of the " + std::to_string(scope.population.size()) + " pre-training subjects' time series, " +
                std::to_string(pca->components) + " components");
      features["pca"] = {int((T / L) * pca->components),
                         pca_features(*pca, features["raw"].x, n_trials, int(T / L))};
      if (scope.wants("category") && data.stim_dim > 0) {
        *stim_map = fit_stimulus_map(scope, features["raw"]);
        if (stim_map->trials > 0) {
          features["stimridge"] = {int(data.stim_dim), stim_map->map.predict(features["raw"].x, n_trials)};
          scope.log("eval: the stimulus map (stimridge) on " + std::to_string(stim_map->trials) +
                    " pre-training trials, alpha " + csv_value(stim_map->alpha));
        }
      }
    }
    scope.log("eval: encoder features of " + std::to_string(n_trials) + " trial windows (" +
              std::to_string(scope.held.size()) + " held-out, " + std::to_string(scope.population.size()) +
              " pre-training subjects)");
    features["pretrained"] = {mc.n_time() * mc.d_model,
                              window_features(pretrained, data, windows, scope.comm, scope.options.device)};
    // The probe's token basis, fitted on the pre-training subjects' windows (on the held-out subjects' where there
    // are none), labels unread: at most 4,096 windows and 2^19 tokens, so that the D x D sums (D^2 / 2 per token)
    // stay a small part of the evaluation on a large model too.
    const std::vector<int>& unlabelled = scope.population.empty() ? scope.held : scope.population;
    *probe_basis = fit_probe_basis(pretrained, data, unlabelled, scope.comm, scope.options.device,
                                   scope.options.probe_components);
    const TokenProjection probe_projection = token_projection(*probe_basis);
    scope.log("eval: the probe's token basis, " + std::to_string(probe_basis->components) + " of " +
              std::to_string(mc.d_model) + " components, from " + std::to_string(probe_basis->tokens) + " tokens");
    features["probe"] = {int(mc.n_tokens()) * probe_basis->components,
                         window_features(pretrained, data, windows, scope.comm, scope.options.device,
                                         TokenPool::per_token, &probe_projection)};
    // The untrained control (random, random_pop): the same probe on the same architecture with its initial weights
    // (MODEL_SPEC's initialisation, seeded), its own token basis of as many components as the probe's, so that both
    // hand the heads the same number of columns. What the probe gains over it is what pre-training gave; what both
    // gain over ridge the architecture's random features and the per-token form. (The 90 % rule would keep more
    // components of a random encoder, whose token variance is spread: 10 against 3 on the quickstart, a population
    // ridge 30 times the cost, and a comparison of widths as much as of weights.)
    auto untrained = model::make_model(mc, model::Placement::cpu());
    untrained->initialize(scope.options.seed + 1);
    const TokenBasis random_basis = fit_probe_basis(*untrained, data, unlabelled, scope.comm, scope.options.device,
                                                    probe_basis->components);
    const TokenProjection random_projection = token_projection(random_basis);
    scope.log("eval: the untrained control's token basis (seed " + std::to_string(scope.options.seed + 1) + "), " +
              std::to_string(random_basis.components) + " of " + std::to_string(mc.d_model) + " components");
    features["random"] = {int(mc.n_tokens()) * random_basis.components,
                          window_features(*untrained, data, windows, scope.comm, scope.options.device,
                                          TokenPool::per_token, &random_projection)};
    if (data.n_networks > 0)
      features["oracle"] = {mc.n_time() * data.n_networks, oracle_features(data, features["raw"].x, windows, mc.n_time())};
  }
  return features;
}

void decode_stimuli(const EvalScope& scope, const EvalModels& models, const TrialCv& cv, const TrialFeatures& features,
                    RankResults& out) {
  for (const StimTask& task : decoding_targets(scope, out)) {
    // The per-subject methods: the subject's own trials only.
    std::map<std::string, const FeatureSet*> method_features = {{"ridge", &features.at("raw")},
                                                                 {"probe", &features.at("probe")},
                                                                 {"random", &features.at("random")}};
    if (features.count("pca")) method_features["pca"] = &features.at("pca");
    if (task.classes && features.count("stimridge")) method_features["stimridge"] = &features.at("stimridge");
    if (features.count("oracle")) method_features["oracle"] = &features.at("oracle");
    // The population methods, for each K of the label-scarce protocol: ridge over the labelled pre-training subjects'
    // trials plus the subject's, one model per method (fitted identically on every rank); finetune and scratch where
    // a model was fine-tuned for the task with those labels. With K = 0 they are their per-subject forms (none run).
    std::map<std::string, std::unique_ptr<PopulationRidge>> pop;
    std::map<std::string, FeatureSet> extra;
    for (const LabelledSet& set : scope.labelled) {
      if (set.k == 0) {
        out.note(task.name + ": with 0 labelled pre-training subjects the population methods are their per-subject "
                 "forms (ridge, pca, stimridge, probe, random, oracle); finetune and scratch do not run");
        continue;
      }
      std::vector<std::pair<std::string, const FeatureSet*>> methods = {{"ridge_pop", &features.at("raw")},
                                                                         {"probe_pop", &features.at("probe")},
                                                                         {"random_pop", &features.at("random")}};
      if (features.count("pca")) methods.push_back({"pca_pop", &features.at("pca")});
      if (task.classes && features.count("stimridge")) methods.push_back({"stimridge_pop", &features.at("stimridge")});
      if (features.count("oracle")) methods.push_back({"oracle_pop", &features.at("oracle")});
      for (const auto& [method, table] : {std::pair{std::string("finetune"), &models.finetuned},
                                          std::pair{std::string("scratch"), &models.scratch}}) {
        auto it = table->find(task.name + set.suffix);
        if (it == table->end()) continue;
        // The fine-tuned model's tokens through its own head's projection: what its task head was trained on.
        scope.log("eval: " + method + set.suffix + " features for " + task.name);
        const TokenProjection projection = token_projection(*it->second.head);
        extra[method + set.suffix] = {int(it->second.head->width()),
                                      window_features(*it->second.model, scope.data, trial_windows(scope.data),
                                                      scope.comm, scope.options.device, TokenPool::per_token,
                                                      &projection)};
        methods.push_back({method, &extra[method + set.suffix]});
      }
      std::vector<int64_t> pop_rows, pop_group;
      cv.trials_of_subjects(set.subjects, &pop_rows, &pop_group);
      if (pop_rows.size() < 2) {
        out.note(task.name + ": population methods" + set.suffix + " skipped, fewer than 2 trials of pre-training "
                 "subjects");
        continue;
      }
      for (const auto& [base, fs] : methods) {
        const std::string method = base + set.suffix;
        method_features[method] = fs;
        pop[method] = std::make_unique<PopulationRidge>(take_rows(fs->x, fs->d, pop_rows),
                                                        take_rows(task.y, task.k, pop_rows), fs->d, task.k, pop_group,
                                                        default_alphas(), scope.options.seed);
      }
    }
    scope.log("eval: " + task.name + ": cross-validating " + std::to_string(method_features.size()) + " methods on " +
              std::to_string(scope.held.size()) + " held-out subjects");
    cross_validate(cv, scope, task.name, 1, task.name + ": subjects with fewer than 4 trials skipped", out, [&](const CvSplit& split) {
      const int64_t n = int64_t(split.test.size());
      const auto y_test = take_rows(task.y, task.k, split.test);
      for (const auto& [method, fs] : method_features) {
        std::vector<double> pred;
        const auto x_test = take_rows(fs->x, fs->d, split.test);
        auto it = pop.find(method);
        if (it == pop.end()) pred = cv.fit_ridge(fs->x, task.y, fs->d, task.k, split.train).predict(x_test, n);
        else pred = it->second->fit_with(fs->x, task.y, split.train).predict(x_test, n);
        if (task.classes) score_category(scope, task, method, split, pred, out);
        else score_embedding(scope, task, method, split, y_test, pred, out);
      }
    });
  }
}

}  // namespace bfm::launch::eval
