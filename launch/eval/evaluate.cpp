#include "launch/eval/evaluate.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <sstream>

#include "launch/eval/stats.h"
#include "base/error.h"
#include "runtime/progress.h"
#include "base/rng.h"
#include "launch/eval/features.h"
#include "launch/eval/population_ridge.h"
#include "launch/eval/summary.h"
#include "launch/eval/tasks.h"

namespace bfm::launch::eval {

namespace {
namespace fs = std::filesystem;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

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

void add_row(std::vector<ResultRow>& rows, const std::string& task, const std::string& method, double fraction,
             const std::string& subject, int fold, const std::string& metric, double value) {
  rows.push_back({task, method, fraction, subject, fold, metric, value});
}

std::string fmt(double v) {
  if (!std::isfinite(v)) return "nan";
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

// Records as doubles for the gather over ranks: task, method, metric and subject by index into tables every rank
// builds alike.
struct Codec {
  std::vector<std::string> tasks, methods, metrics, subjects;
  static int index(std::vector<std::string>& table, const std::string& v) {
    auto it = std::find(table.begin(), table.end(), v);
    if (it != table.end()) return int(it - table.begin());
    table.push_back(v);
    return int(table.size() - 1);
  }
};


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
  auto wants = [&](const std::string& t) {
    return std::find(options.tasks.begin(), options.tasks.end(), t) != options.tasks.end();
  };
  const int64_t T = data.window, P = data.n_parcels, S = data.stim_dim;
  const int L = mc.patch_len;
  Stopwatch clock;
  EvalReport report;
  auto note = [&](const std::string& s) {
    if (std::find(report.notes.begin(), report.notes.end(), s) == report.notes.end()) report.notes.push_back(s);
  };
  std::vector<int> held, population, held_all;
  for (int s = 0; s < int(data.subjects.size()); ++s) (data.subjects[size_t(s)].held_out ? held_all : population).push_back(s);
  require(options.parts >= 1 && options.part >= 0 && options.part < options.parts, "eval: part ", options.part,
          " of ", options.parts, " does not exist");
  for (size_t i = 0; i < held_all.size(); ++i)
    if (int(i % size_t(options.parts)) == options.part) held.push_back(held_all[i]);
  report.held_out_subjects = int(held.size());
  report.population_subjects = int(population.size());
  report.trials = int64_t(data.trials.size());
  auto log = [&](const std::string& s) {
    if (options.verbose && comm.rank() == 0) runtime::log_line(s);
  };

  // ---- feature sets of every trial window ---------------------------------------------------------------------
  std::vector<WindowRef> trial_windows;
  for (const auto& t : data.trials) trial_windows.push_back({t.subject, t.run, t.onset});
  const int64_t n_trials = int64_t(trial_windows.size());
  struct FeatureSet {
    std::string name;
    int d = 0;
    std::vector<double> x;  // [n_trials, d]
  };
  std::map<std::string, FeatureSet> features;  // by method family
  const bool stim_tasks = std::any_of(options.tasks.begin(), options.tasks.end(), [](const std::string& t) {
    return is_task(t) && task_info(t).kind == TaskKind::decoding;
  });
  if (stim_tasks && n_trials > 0) {
    features["raw"] = {"raw", int((T / L) * P), raw_features(data, trial_windows, L)};
    log("eval: encoder features of " + std::to_string(n_trials) + " trial windows (" + std::to_string(held.size()) +
        " held-out, " + std::to_string(population.size()) + " pre-training subjects)");
    features["pretrained"] = {"pretrained", mc.n_time() * mc.d_model,
                              window_features(*models.pretrained, data, trial_windows, comm, options.device)};
    if (data.n_networks > 0)
      features["oracle"] = {"oracle", mc.n_time() * data.n_networks,
                            oracle_features(data, features["raw"].x, trial_windows, mc.n_time())};
  }

  // Per trial: its stimulus (the cross-validation group), its run (series) and its window's time interval.
  std::vector<int64_t> trial_group(static_cast<size_t>(n_trials)), trial_series(static_cast<size_t>(n_trials)), trial_start(static_cast<size_t>(n_trials)),
      trial_end(static_cast<size_t>(n_trials));
  // The cross-validation unit: the stimulus, or (cv_unit "run") the run, for a subject with trials in at least two
  // runs (a subject with one task run falls back to stimuli, with a note).
  std::map<int, std::set<int>> runs_with_trials;
  for (const auto& t : data.trials) runs_with_trials[t.subject].insert(t.run);
  for (int64_t i = 0; i < n_trials; ++i) {
    const EvalTrial& t = data.trials[size_t(i)];
    const bool by_run = options.cv_unit == "run" && runs_with_trials[t.subject].size() >= 2;
    if (options.cv_unit == "run" && !by_run && data.subjects[size_t(t.subject)].held_out)
      note("cross-validation by run: subjects with one task run are cross-validated by stimulus");
    trial_group[size_t(i)] = by_run ? -1 - int64_t(t.run) : t.stimulus;
    trial_series[size_t(i)] = int64_t(t.subject) * 1000000 + t.run;
    trial_start[size_t(i)] = t.onset;
    trial_end[size_t(i)] = t.onset + T;
  }

  // Trials of each subject in time order.
  std::vector<std::vector<int64_t>> trials_of(data.subjects.size());
  for (int64_t i = 0; i < n_trials; ++i) trials_of[size_t(data.trials[size_t(i)].subject)].push_back(i);

  std::vector<ResultRow> my_rows;
  std::map<std::string, std::vector<std::string>> pred_lines;  // task -> CSV lines of this rank
  std::map<std::string, std::vector<double>> enc_sum;         // method -> per-parcel r sums (fraction 1)
  std::map<std::string, double> enc_count;

  // ---- stimulus tasks -----------------------------------------------------------------------------------------
  struct StimTask {
    std::string name;
    int k = 0;
    bool classes = false;
    std::vector<double> y;  // [n_trials, k] (coded classes or embedding)
  };
  std::vector<StimTask> stask;
  if (n_trials > 0 && wants("category")) {
    if (data.n_categories >= 2) {
      std::vector<int> lab;
      for (const auto& t : data.trials) lab.push_back(t.label);
      stask.push_back({"category", data.n_categories, true, code_classes(lab, data.n_categories)});
    } else {
      note("category: skipped, the corpus has fewer than 2 stimulus categories");
    }
  }
  if (n_trials > 0 && (wants("embedding") || wants("retrieval"))) {
    if (S > 0) {
      std::vector<double> y(size_t(n_trials * S));
      for (int64_t i = 0; i < n_trials; ++i)
        for (int64_t j = 0; j < S; ++j) y[size_t(i * S + j)] = data.stimuli[size_t(data.trials[size_t(i)].stimulus)][size_t(j)];
      stask.push_back({"embedding", int(S), false, std::move(y)});
    } else {
      note("embedding, retrieval: skipped, the corpus has no stimulus embeddings");
    }
  }
  if (n_trials == 0 && stim_tasks) note("stimulus tasks: skipped, the held-out subjects have no stimulus trial");

  // Which methods run: features from the pre-trained model always; fine-tuned / scratch where given per task.
  for (auto& task : stask) {
    std::map<std::string, const FeatureSet*> method_features = {{"ridge", &features["raw"]},
                                                                 {"ridge_pop", &features["raw"]},
                                                                 {"probe", &features["pretrained"]},
                                                                 {"probe_pop", &features["pretrained"]}};
    if (features.count("oracle")) {
      method_features["oracle"] = &features["oracle"];
      method_features["oracle_pop"] = &features["oracle"];
    }
    std::map<std::string, FeatureSet> extra;
    for (const auto& [method, table] : {std::pair{std::string("finetune"), &models.finetuned},
                                        std::pair{std::string("scratch"), &models.scratch}}) {
      auto it = table->find(task.name);
      if (it == table->end()) continue;
      log("eval: " + method + " features for " + task.name);
      extra[method] = {method, it->second->config().n_time() * it->second->config().d_model,
                       window_features(*it->second, data, trial_windows, comm, options.device)};
      method_features[method] = &extra[method];
    }
    // Population models, one per method (fitted identically on every rank).
    std::map<std::string, std::unique_ptr<PopulationRidge>> pop;
    std::vector<int64_t> pop_rows, pop_group;
    for (int s : population)
      for (int64_t i : trials_of[size_t(s)]) {
        pop_rows.push_back(i);
        pop_group.push_back(s);
      }
    for (const auto& [method, fs] : method_features) {
      if (method == "ridge" || method == "probe" || method == "oracle") continue;
      if (pop_rows.size() < 2) {
        note(task.name + ": population methods skipped, fewer than 2 trials of pre-training subjects");
        continue;
      }
      pop[method] = std::make_unique<PopulationRidge>(take_rows(fs->x, fs->d, pop_rows), take_rows(task.y, task.k, pop_rows),
                                                      fs->d, task.k, pop_group, default_alphas(), options.seed);
    }
    log("eval: " + task.name + ": cross-validating " + std::to_string(method_features.size()) + " methods on " +
        std::to_string(held.size()) + " held-out subjects");
    for (size_t hi = size_t(comm.rank()); hi < held.size(); hi += size_t(comm.size())) {
      const int s = held[hi];
      const std::vector<int64_t>& mine = trials_of[size_t(s)];
      if (mine.size() < 4) {
        note(task.name + ": subjects with fewer than 4 trials skipped");
        continue;
      }
      const std::string& sid = data.subjects[size_t(s)].id;
      const auto folds_of_subject = subject_folds(mine, trial_group, trial_series, trial_start, trial_end,
                                                  options.folds, options.seed ^ (uint64_t(s) * 0x9E3779B97F4A7C15ULL));
      for (int f = 0; f < int(folds_of_subject.size()); ++f) {
        const std::vector<int64_t>& test_rows = folds_of_subject[size_t(f)].test;
        const std::vector<int64_t>& train_all = folds_of_subject[size_t(f)].train;
        if (train_all.empty() || test_rows.empty()) continue;
        const auto y_test = take_rows(task.y, task.k, test_rows);
        for (double q : options.fractions) {
          const std::vector<int64_t> train_rows = first_fraction(train_all, q);
          for (const auto& [method, fs] : method_features) {
            std::vector<double> pred;
            const auto x_test = take_rows(fs->x, fs->d, test_rows);
            if (method == "ridge" || method == "probe" || method == "oracle") {
              InnerCv cv;
              cv.seed = options.seed;
              const Ridge r = fit_ridge_cv(fs->x, task.y, fs->d, task.k, train_rows, trial_group, trial_series,
                                           trial_start, trial_end, cv);
              pred = r.predict(x_test, int64_t(test_rows.size()));
            } else {
              auto it = pop.find(method);
              if (it == pop.end()) continue;
              pred = it->second->fit_with(fs->x, task.y, train_rows).predict(x_test, int64_t(test_rows.size()));
            }
            const int64_t n = int64_t(test_rows.size());
            if (task.classes) {
              std::vector<int> truth, guess = argmax_rows(pred, n, task.k);
              for (int64_t r : test_rows) truth.push_back(data.trials[size_t(r)].label);
              add_row(my_rows, task.name, method, q, sid, f, "accuracy", accuracy(truth, guess));
              add_row(my_rows, task.name, method, q, sid, f, "balanced_accuracy", balanced_accuracy(truth, guess));
              add_row(my_rows, task.name, method, q, sid, f, "auc", auc_ovr(truth, pred, task.k));
              if (!options.predictions_dir.empty())
                for (int64_t i = 0; i < n; ++i) {
                  std::string line = method + "," + fmt(q) + "," + sid + "," + std::to_string(f) + "," +
                                     std::to_string(truth[size_t(i)]) + "," + std::to_string(guess[size_t(i)]);
                  for (int c = 0; c < task.k; ++c) (line += ",") += fmt(pred[size_t(i * task.k + c)]);
                  pred_lines[task.name].push_back(line);
                }
            } else {
              std::vector<double> rs, r2s;
              for (int c = 0; c < task.k; ++c) {
                rs.push_back(pearson(&y_test[size_t(c)], &pred[size_t(c)], n, task.k, task.k));
                r2s.push_back(r2(&y_test[size_t(c)], &pred[size_t(c)], n, task.k, task.k));
              }
              if (wants("embedding")) {
                add_row(my_rows, "embedding", method, q, sid, f, "r", mean_spread(rs).mean);
                add_row(my_rows, "embedding", method, q, sid, f, "r2", mean_spread(r2s).mean);
              }
              if (wants("retrieval")) {
                // Candidates: the fold's distinct test stimuli.
                std::vector<int64_t> cand_ids;
                std::vector<int> target;
                for (int64_t r : test_rows) {
                  const int64_t st = data.trials[size_t(r)].stimulus;
                  auto it = std::find(cand_ids.begin(), cand_ids.end(), st);
                  target.push_back(int(it - cand_ids.begin()));
                  if (it == cand_ids.end()) cand_ids.push_back(st);
                }
                std::vector<double> cand;
                for (int64_t st : cand_ids)
                  for (int64_t j = 0; j < S; ++j) cand.push_back(data.stimuli[size_t(st)][size_t(j)]);
                const auto ranks = identification_ranks(pred, cand, target, int(S));
                add_row(my_rows, "retrieval", method, q, sid, f, "top1", top_k(ranks, 1));
                add_row(my_rows, "retrieval", method, q, sid, f, "top5", top_k(ranks, 5));
                add_row(my_rows, "retrieval", method, q, sid, f, kCandidates, double(cand_ids.size()));
              }
              if (!options.predictions_dir.empty())
                for (int64_t i = 0; i < n; ++i) {
                  std::string line = method + "," + fmt(q) + "," + sid + "," + std::to_string(f) + "," +
                                     std::to_string(data.trials[size_t(test_rows[size_t(i)])].stimulus);
                  for (int c = 0; c < task.k; ++c) (line += ",") += fmt(y_test[size_t(i * task.k + c)]);
                  for (int c = 0; c < task.k; ++c) (line += ",") += fmt(pred[size_t(i * task.k + c)]);
                  pred_lines["embedding"].push_back(line);
                }
            }
          }
        }
      }
    }
  }

  // Zero-shot retrieval with the contrastive projections (no training on the subject at all).
  if (wants("retrieval") && S > 0 && n_trials > 0) {
    if (!mc.contrastive) {
      note("retrieval: no zero-shot `clip` row, the checkpoint was not pre-trained with the contrastive objective");
    } else {
      // brain side: brain_proj(pooled); stimulus side: stim_proj(s); cosine similarity as in training.
      model::BrainModel m(mc);
      std::copy_n(models.pretrained->params(), models.pretrained->arena_size(), m.params());
      const int D = mc.d_model, E = mc.proj_dim;
      const float* wb = m.params() + m.layout().offset("brain_proj.weight");
      const float* ws = m.params() + m.layout().offset("stim_proj.weight");
      const auto& feat = features["pretrained"].x;  // per time patch means; pooled = their mean
      const int nt = mc.n_time();
      for (size_t hi = size_t(comm.rank()); hi < held.size(); hi += size_t(comm.size())) {
        const int s = held[hi];
        const auto& mine = trials_of[size_t(s)];
        if (mine.size() < 2) continue;
        std::vector<double> brain, cand;
        std::vector<int64_t> cand_ids;
        std::vector<int> target;
        for (int64_t i : mine) {
          for (int e = 0; e < E; ++e) {
            double v = 0;
            for (int d = 0; d < D; ++d) {
              double pooled = 0;
              for (int j = 0; j < nt; ++j) pooled += feat[size_t(i) * size_t(nt * D) + size_t(j * D + d)] / nt;
              v += double(wb[size_t(e * D + d)]) * pooled;
            }
            brain.push_back(v);
          }
          const int64_t st = data.trials[size_t(i)].stimulus;
          auto it = std::find(cand_ids.begin(), cand_ids.end(), st);
          target.push_back(int(it - cand_ids.begin()));
          if (it == cand_ids.end()) cand_ids.push_back(st);
        }
        for (int64_t st : cand_ids)
          for (int e = 0; e < E; ++e) {
            double v = 0;
            for (int64_t j = 0; j < S; ++j) v += double(ws[size_t(e * S + j)]) * data.stimuli[size_t(st)][size_t(j)];
            cand.push_back(v);
          }
        const auto ranks = identification_ranks(brain, cand, target, E, /*cosine=*/true);
        for (double q : options.fractions) {  // zero-shot: the same at every fraction
          add_row(my_rows, "retrieval", "clip", q, data.subjects[size_t(s)].id, -1, "top1", top_k(ranks, 1));
          add_row(my_rows, "retrieval", "clip", q, data.subjects[size_t(s)].id, -1, "top5", top_k(ranks, 5));
          add_row(my_rows, "retrieval", "clip", q, data.subjects[size_t(s)].id, -1, kCandidates, double(cand_ids.size()));
        }
      }
    }
  }

  // ---- encoding -------------------------------------------------------------------------------------------------
  if (wants("encoding")) {
    if (S == 0 || n_trials == 0) {
      note("encoding: skipped, no stimulus embeddings or no trials");
    } else {
      note("encoding: the pre-trained brain model has no stimulus-to-brain pathway, so only ridge (per subject) and "
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
      std::vector<int64_t> pop_rows, pop_group;
      for (int s : population)
        for (int64_t i : trials_of[size_t(s)]) {
          pop_rows.push_back(i);
          pop_group.push_back(s);
        }
      std::unique_ptr<PopulationRidge> pop;
      if (pop_rows.size() >= 2)
        pop = std::make_unique<PopulationRidge>(take_rows(x, int(S), pop_rows), take_rows(y, int(P), pop_rows), int(S),
                                                int(P), pop_group, default_alphas(), options.seed);
      const auto& g = trial_group;
      const auto& ser = trial_series;
      const auto& st = trial_start;
      const auto& en = trial_end;
      for (const std::string method : {"ridge", "ridge_pop"}) {
        enc_sum[method].assign(size_t(P), 0.0);
        enc_count[method] = 0;
      }
      for (size_t hi = size_t(comm.rank()); hi < held.size(); hi += size_t(comm.size())) {
        const int s = held[hi];
        const auto& mine = trials_of[size_t(s)];
        if (mine.size() < 4) continue;
        const std::string& sid = data.subjects[size_t(s)].id;
        const auto folds_of_subject = subject_folds(mine, g, ser, st, en, options.folds,
                                                    options.seed ^ (uint64_t(s) * 0x9E3779B97F4A7C15ULL));
        for (int f = 0; f < int(folds_of_subject.size()); ++f) {
          const std::vector<int64_t>& test_rows = folds_of_subject[size_t(f)].test;
          const std::vector<int64_t>& train_all = folds_of_subject[size_t(f)].train;
          if (train_all.empty() || test_rows.size() < 2) continue;
          const auto x_test = take_rows(x, int(S), test_rows), y_test = take_rows(y, int(P), test_rows);
          const int64_t n = int64_t(test_rows.size());
          for (double q : options.fractions) {
            const std::vector<int64_t> train_rows = first_fraction(train_all, q);
            for (const std::string method : {"ridge", "ridge_pop"}) {
              std::vector<double> pred;
              if (method == "ridge") {
                InnerCv cv;
                cv.seed = options.seed;
                pred = fit_ridge_cv(x, y, int(S), int(P), train_rows, g, ser, st, en, cv).predict(x_test, n);
              } else {
                if (!pop) continue;
                pred = pop->fit_with(x, y, train_rows).predict(x_test, n);
              }
              std::vector<double> rs, r2s;
              for (int64_t p = 0; p < P; ++p) {
                rs.push_back(pearson(&y_test[size_t(p)], &pred[size_t(p)], n, P, P));
                r2s.push_back(r2(&y_test[size_t(p)], &pred[size_t(p)], n, P, P));
              }
              add_row(my_rows, "encoding", method, q, sid, f, "r", mean_spread(rs).mean);
              add_row(my_rows, "encoding", method, q, sid, f, "r2", mean_spread(r2s).mean);
              if (q == 1.0) {
                for (int64_t p = 0; p < P; ++p)
                  if (std::isfinite(rs[size_t(p)])) enc_sum[method][size_t(p)] += rs[size_t(p)];
                enc_count[method] += 1;
              }
              if (!options.predictions_dir.empty() && (q == 1.0 || q == 0.1))
                for (int64_t i = 0; i < n; ++i) {
                  std::string line = method + "," + fmt(q) + "," + sid + "," + std::to_string(f);
                  for (int64_t p = 0; p < P; ++p) (line += ",") += fmt(y_test[size_t(i * P + p)]);
                  for (int64_t p = 0; p < P; ++p) (line += ",") += fmt(pred[size_t(i * P + p)]);
                  pred_lines["encoding"].push_back(line);
                }
            }
          }
        }
      }
    }
  }

  // ---- subject tasks ----------------------------------------------------------------------------------------------
  // Subject tasks are across held-out subjects: with parts (a job array over subjects), part 0 runs them for all.
  std::vector<std::string> subject_tasks;
  for (const TaskInfo& t : tasks())
    if (t.kind == TaskKind::subject && wants(t.name) && options.part == 0) subject_tasks.push_back(t.name);
  if (!subject_tasks.empty()) {
    // Non-overlapping windows of every run of every subject; features per subject and fraction averaged over the
    // windows inside the first fraction of each run (at least the first window).
    std::vector<WindowRef> windows;
    std::vector<std::vector<std::pair<size_t, double>>> windows_of(data.subjects.size());  // (window, end fraction)
    for (int s = 0; s < int(data.subjects.size()); ++s)
      for (int r = 0; r < int(data.subjects[size_t(s)].runs.size()); ++r) {
        const int64_t len = data.subjects[size_t(s)].runs[size_t(r)].length;
        for (int64_t st = 0; st + T <= len; st += T) {
          windows_of[size_t(s)].push_back({windows.size(), double(st + T) / double(len)});
          windows.push_back({s, r, st});
        }
      }
    log("eval: subject tasks: encoder features of " + std::to_string(windows.size()) + " windows of " +
        std::to_string(data.subjects.size()) + " subjects");
    const std::vector<double> wf = window_features(*models.pretrained, data, windows, comm, options.device);
    const int dm = mc.n_time() * mc.d_model;
    const int dc = int(P * (P - 1) / 2);
    auto probe_features = [&](int s, double q) {
      std::vector<double> f(size_t(dm), 0.0);
      int used = 0;
      for (const auto& [w, end_fraction] : windows_of[size_t(s)]) {
        if (used > 0 && end_fraction > q + 1e-12) continue;
        for (int j = 0; j < dm; ++j) f[size_t(j)] += wf[w * size_t(dm) + size_t(j)];
        ++used;
      }
      for (auto& v : f) v /= std::max(1, used);
      return f;
    };
    auto connectivity = [&](int s, double q) {  // Fisher z of parcel correlations, averaged over runs
      std::vector<double> f(size_t(dc), 0.0);
      int runs = 0;
      for (const auto& r : data.subjects[size_t(s)].runs) {
        const int64_t n = std::min(r.length, std::max<int64_t>(T, int64_t(std::ceil(q * double(r.length)))));
        std::vector<double> mean(size_t(P), 0.0), sd(size_t(P), 0.0);
        for (int64_t t = 0; t < n; ++t)
          for (int64_t p = 0; p < P; ++p) mean[size_t(p)] += r.timeseries[size_t(t * P + p)] / double(n);
        std::vector<double> z(size_t(n * P));
        for (int64_t t = 0; t < n; ++t)
          for (int64_t p = 0; p < P; ++p) {
            z[size_t(t * P + p)] = r.timeseries[size_t(t * P + p)] - mean[size_t(p)];
            sd[size_t(p)] += z[size_t(t * P + p)] * z[size_t(t * P + p)];
          }
        for (auto& v : sd) v = v > 0 ? std::sqrt(v) : 1.0;
        int64_t k = 0;
        for (int64_t a = 0; a < P; ++a)
          for (int64_t b = a + 1; b < P; ++b, ++k) {
            double c = 0;
            for (int64_t t = 0; t < n; ++t) c += z[size_t(t * P + a)] * z[size_t(t * P + b)];
            c /= sd[size_t(a)] * sd[size_t(b)];
            c = std::clamp(c, -0.999999, 0.999999);
            f[size_t(k)] += std::atanh(c);
          }
        ++runs;
      }
      for (auto& v : f) v /= std::max(1, runs);
      return f;
    };
    for (const auto& task : subject_tasks) {
      // Coded target: classes for diagnosis / sex, a value for age / score; subjects without it are left out.
      auto target = [&](int s, double* value) {
        const EvalSubject& sub = data.subjects[size_t(s)];
        if (task == "diagnosis") {
          if (sub.diagnosis.empty()) return false;
          *value = sub.diagnosis == "control" ? 0 : 1;
        } else if (task == "sex") {
          if (sub.sex != "F" && sub.sex != "M") return false;
          *value = sub.sex == "F" ? 1 : 0;
        } else if (task == "age") {
          if (!std::isfinite(sub.age)) return false;
          *value = sub.age;
        } else {
          if (sub.scores.empty() || !std::isfinite(sub.scores[0])) return false;
          *value = sub.scores[0];
        }
        return true;
      };
      const bool classes = task_info(task).classification;
      std::vector<int> train_s, test_s;
      std::vector<double> train_y, test_y;
      for (int s : population) {
        double v;
        if (target(s, &v)) train_s.push_back(s), train_y.push_back(v);
      }
      for (int s : held_all) {
        double v;
        if (target(s, &v)) test_s.push_back(s), test_y.push_back(v);
      }
      if (train_s.size() < 4 || test_s.size() < 2 ||
          (classes && std::set<double>(train_y.begin(), train_y.end()).size() < 2)) {
        note(task + ": skipped, too few subjects with this trait (" + std::to_string(train_s.size()) +
             " pre-training, " + std::to_string(test_s.size()) + " held out)");
        continue;
      }
      // oracle (synthetic corpora): the subject's true coupling matrix, off-diagonal upper triangle: what knowing the
      // structure the traits change gives, whatever the scan time (the ceiling of the subject tasks).
      std::vector<std::string> subject_methods = {"connectivity", "probe"};
      const int K = data.n_networks, dk = K * (K - 1) / 2;
      bool have_truth = !data.true_coupling.empty();
      for (int s : train_s) have_truth = have_truth && data.true_coupling.count(data.subjects[size_t(s)].id);
      for (int s : test_s) have_truth = have_truth && data.true_coupling.count(data.subjects[size_t(s)].id);
      if (have_truth) subject_methods.push_back("oracle");
      auto true_coupling = [&](int s) {
        const std::vector<float>& m = data.true_coupling.at(data.subjects[size_t(s)].id);
        std::vector<double> f;
        for (int a = 0; a < K; ++a)
          for (int b = a + 1; b < K; ++b) f.push_back(m[size_t(a * K + b)]);
        return f;
      };
      for (const std::string& method : subject_methods) {
        const int d = method == "probe" ? dm : method == "oracle" ? dk : dc;
        auto feats = [&](int s, double q) {
          return method == "probe" ? probe_features(s, q) : method == "oracle" ? true_coupling(s) : connectivity(s, q);
        };
        std::vector<double> x, y;
        for (size_t i = 0; i < train_s.size(); ++i) {
          const auto f = feats(train_s[i], 1.0);
          x.insert(x.end(), f.begin(), f.end());
          if (classes) {
            y.push_back(train_y[i] == 0 ? 1.0 : -1.0);
            y.push_back(train_y[i] == 1 ? 1.0 : -1.0);
          } else {
            y.push_back(train_y[i]);
          }
        }
        const int k = classes ? 2 : 1;
        std::vector<int64_t> rows(train_s.size()), group(train_s.size()), zeros(train_s.size(), 0), ends(train_s.size());
        std::iota(rows.begin(), rows.end(), 0);
        std::iota(group.begin(), group.end(), 0);
        std::iota(ends.begin(), ends.end(), 1);
        InnerCv cv;
        cv.k_inner = 5;
        cv.seed = options.seed;
        // Each subject its own group and its own interval (no purge between subjects).
        const Ridge r = fit_ridge_cv(x, y, d, k, rows, group, group, zeros, ends, cv);
        for (double q : options.fractions) {
          std::vector<double> xt;
          for (int s : test_s) {
            const auto f = feats(s, q);
            xt.insert(xt.end(), f.begin(), f.end());
          }
          const auto pred = r.predict(xt, int64_t(test_s.size()));
          // Metric over a set of held-out subjects (indices into test_s).
          auto metrics = [&](const std::vector<size_t>& idx) {
            std::map<std::string, double> out;
            if (classes) {
              std::vector<int> truth, guess;
              std::vector<double> scores;
              for (size_t i : idx) {
                truth.push_back(int(test_y[i]));
                guess.push_back(pred[i * 2 + 1] > pred[i * 2] ? 1 : 0);
                scores.push_back(pred[i * 2]);
                scores.push_back(pred[i * 2 + 1]);
              }
              out["accuracy"] = accuracy(truth, guess);
              out["balanced_accuracy"] = balanced_accuracy(truth, guess);
              out["auc"] = auc_ovr(truth, scores, 2);
            } else {
              std::vector<double> t, p;
              for (size_t i : idx) {
                t.push_back(test_y[i]);
                p.push_back(pred[i]);
              }
              out["r"] = pearson(t.data(), p.data(), int64_t(t.size()));
              out["r2"] = r2(t.data(), p.data(), int64_t(t.size()));
            }
            return out;
          };
          std::vector<size_t> all(test_s.size());
          std::iota(all.begin(), all.end(), 0);
          for (const auto& [metric, value] : metrics(all)) add_row(my_rows, task, method, q, "all", -1, metric, value);
          // Bootstrap spread over held-out subjects (same draws on every rank: rank 0 keeps the rows).
          Rng rng = Rng::stream(options.seed, 0xb007, uint64_t(q * 1e6));
          std::map<std::string, std::vector<double>> boot;
          for (int b = 0; b < options.bootstrap; ++b) {
            std::vector<size_t> idx;
            for (size_t i = 0; i < all.size(); ++i) idx.push_back(size_t(rng.below(all.size())));
            for (const auto& [metric, value] : metrics(idx)) boot[metric].push_back(value);
          }
          for (const auto& [metric, values] : boot)
            add_row(my_rows, task, method, q, "all", -2, metric, mean_spread(values).sd);  // fold -2: bootstrap sd
          if (!options.predictions_dir.empty())
            for (size_t i = 0; i < test_s.size(); ++i) {
              std::string line = method + "," + fmt(q) + "," + data.subjects[size_t(test_s[i])].id + ",-1," + fmt(test_y[i]);
              for (int c = 0; c < k; ++c) (line += ",") += fmt(pred[i * size_t(k) + size_t(c)]);
              pred_lines[task].push_back(line);
            }
        }
      }
    }
    // Only rank 0 keeps the subject tasks' rows (every rank computed them alike).
    if (comm.rank() != 0) {
      my_rows.erase(std::remove_if(my_rows.begin(), my_rows.end(),
                                   [&](const ResultRow& r) { return r.subject == "all"; }),
                    my_rows.end());
      for (const auto& t : subject_tasks) pred_lines.erase(t);
    }
  }

  // ---- gather rows over ranks -------------------------------------------------------------------------------------
  Codec codec;
  codec.tasks = task_names();
  codec.methods = methods();
  codec.metrics = row_metrics();
  Codec::index(codec.subjects, "all");
  for (const auto& s : data.subjects) Codec::index(codec.subjects, s.id);
  std::vector<double> mine_enc;
  for (const auto& r : my_rows) {
    mine_enc.insert(mine_enc.end(), {double(Codec::index(codec.tasks, r.task)), double(Codec::index(codec.methods, r.method)),
                                     r.fraction, double(Codec::index(codec.subjects, r.subject)), double(r.fold),
                                     double(Codec::index(codec.metrics, r.metric)), r.value});
  }
  require(codec.tasks.size() == tasks().size() && codec.methods.size() == methods().size() &&
              codec.metrics.size() == row_metrics().size(),
          "eval: unknown row name");
  const int ranks = comm.size();
  std::vector<double> counts(size_t(ranks), 0.0);
  counts[size_t(comm.rank())] = double(mine_enc.size());
  comm.allreduce_sum_host(counts.data(), ranks);
  int64_t total = 0, offset = 0;
  for (int r = 0; r < ranks; ++r) {
    if (r == comm.rank()) offset = total;
    total += int64_t(counts[size_t(r)]);
  }
  std::vector<double> all(size_t(total), 0.0);
  std::copy(mine_enc.begin(), mine_enc.end(), all.begin() + offset);
  if (ranks > 1) comm.allreduce_sum_host(all.data(), total);
  for (int64_t i = 0; i + 7 <= total; i += 7) {
    ResultRow r;
    r.task = codec.tasks[size_t(all[size_t(i)])];
    r.method = codec.methods[size_t(all[size_t(i + 1)])];
    r.fraction = all[size_t(i + 2)];
    r.subject = codec.subjects[size_t(all[size_t(i + 3)])];
    r.fold = int(all[size_t(i + 4)]);
    r.metric = codec.metrics[size_t(all[size_t(i + 5)])];
    r.value = all[size_t(i + 6)];
    report.rows.push_back(r);
  }
  // Encoding maps: summed over ranks.
  for (auto& [method, sums] : enc_sum) {
    double n = enc_count[method];
    if (ranks > 1) {
      comm.allreduce_sum_host(sums.data(), int64_t(sums.size()));
      comm.allreduce_sum_host(&n, 1);
    }
    if (n > 0) {
      for (auto& v : sums) v /= n;
      report.encoding_map[method] = sums;
      report.encoding_folds[method] = n;
    }
  }
  // Notes: every rank's, merged at rank 0 through a barrier-free rule: notes are decided by data every rank sees
  // alike, except the per-subject skips, which are rare and only rank 0's are kept.

  report.n_categories = data.n_categories;
  summarize(report);

  // ---- predictions files ------------------------------------------------------------------------------------------
  if (!options.predictions_dir.empty()) {
    fs::create_directories(options.predictions_dir);
    comm.barrier();
    for (const auto& [task, lines] : pred_lines) {
      const fs::path part = fs::path(options.predictions_dir) / (task + ".rank" + std::to_string(comm.rank()) + ".csv");
      std::ofstream out(part);
      for (const auto& l : lines) out << l << "\n";
      require(static_cast<bool>(out), part.string(), ": cannot write");
    }
    comm.barrier();
    if (comm.rank() == 0) {
      for (const std::string& task : prediction_files()) {
        const std::string header = predictions_header(task, data.n_categories, S, P);
        bool any = false;
        std::ostringstream merged;
        merged << header << "\n";
        for (int r = 0; r < ranks; ++r) {
          const fs::path part = fs::path(options.predictions_dir) / (task + ".rank" + std::to_string(r) + ".csv");
          if (!fs::exists(part)) continue;
          any = true;
          std::ifstream in(part);
          merged << in.rdbuf();
          fs::remove(part);
        }
        if (any) {
          std::ofstream out(fs::path(options.predictions_dir) / (task + ".csv"));
          out << merged.str();
        }
      }
    }
    comm.barrier();
  }
  log("eval: done in " + runtime::format_duration(clock.seconds()));
  return report;
}

}  // namespace bfm::launch::eval

