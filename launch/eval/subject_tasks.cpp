// The subject tasks: diagnosis, sex, age and score across subjects (subject_tasks.h).
#include "launch/eval/subject_tasks.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <numeric>
#include <set>

#include "base/rng.h"
#include "launch/eval/features.h"
#include "launch/eval/stats.h"
#include "launch/eval/tasks.h"

namespace bfm::launch::eval {

namespace {

// Non-overlapping windows of every run of every subject, and per subject (window, the fraction of its run that ends
// with it): the probe's features per subject and fraction average the windows inside the first fraction of each run.
struct SubjectWindows {
  std::vector<WindowRef> windows;
  std::vector<std::vector<std::pair<size_t, double>>> of;  // per subject: (window, end fraction)
};
SubjectWindows subject_windows(const EvalData& data) {
  const int64_t T = data.window;
  SubjectWindows w;
  w.of.resize(data.subjects.size());
  for (int s = 0; s < int(data.subjects.size()); ++s)
    for (int r = 0; r < int(data.subjects[size_t(s)].runs.size()); ++r) {
      const int64_t len = data.subjects[size_t(s)].runs[size_t(r)].length;
      for (int64_t st = 0; st + T <= len; st += T) {
        w.of[size_t(s)].push_back({w.windows.size(), double(st + T) / double(len)});
        w.windows.push_back({s, r, st});
      }
    }
  return w;
}

// probe: the mean of the window features wf [n_windows, dm] over subject s's windows inside the first fraction q of
// each run (at least the first window).
std::vector<double> probe_features(const SubjectWindows& sw, const std::vector<double>& wf, int dm, int s, double q) {
  std::vector<double> f(size_t(dm), 0.0);
  int used = 0;
  for (const auto& [w, end_fraction] : sw.of[size_t(s)]) {
    if (used > 0 && end_fraction > q + 1e-12) continue;
    for (int j = 0; j < dm; ++j) f[size_t(j)] += wf[w * size_t(dm) + size_t(j)];
    ++used;
  }
  for (auto& v : f) v /= std::max(1, used);
  return f;
}

// probe_conn: the model's connectivity. Each parcel's encoder features in a window (its tokens' mean over time
// patches, D numbers; pf [n_windows, P * D]) vary from window to window with what the parcel does; the Fisher z of the
// correlation between two parcels' features over the subject's windows inside the first fraction q of each run (at
// least the first window) and the D dimensions, each parcel's dimension centred by `mean` [P * D], its mean over the
// pre-training subjects' windows (which removes the parcel's fixed embedding and works from one window on),
// off-diagonal upper triangle as connectivity's. Why: traits live in how regions co-vary, which the mean of the
// features (probe) averages away.
std::vector<double> model_connectivity_features(const SubjectWindows& sw, const std::vector<double>& pf,
                                                const std::vector<double>& mean, int P, int D, int s, double q) {
  std::vector<size_t> used;
  for (const auto& [w, end_fraction] : sw.of[size_t(s)])
    if (used.empty() || end_fraction <= q + 1e-12) used.push_back(w);
  const size_t width = size_t(P) * size_t(D);
  std::vector<double> x(used.size() * width);  // centred, [window, parcel, dimension]
  for (size_t i = 0; i < used.size(); ++i)
    for (size_t j = 0; j < width; ++j) x[i * width + j] = pf[used[i] * width + j] - mean[j];
  std::vector<double> norm(size_t(P), 0.0);
  for (size_t i = 0; i < used.size(); ++i)
    for (int p = 0; p < P; ++p)
      for (int k = 0; k < D; ++k) norm[size_t(p)] += x[i * width + size_t(p * D + k)] * x[i * width + size_t(p * D + k)];
  for (auto& v : norm) v = v > 0 ? std::sqrt(v) : 1.0;
  std::vector<double> f;
  f.reserve(size_t(P) * size_t(P - 1) / 2);
  for (int a = 0; a < P; ++a)
    for (int b = a + 1; b < P; ++b) {
      double c = 0;
      for (size_t i = 0; i < used.size(); ++i) {
        const double* xa = &x[i * width + size_t(a * D)];
        const double* xb = &x[i * width + size_t(b * D)];
        for (int k = 0; k < D; ++k) c += xa[k] * xb[k];
      }
      f.push_back(std::atanh(std::clamp(c / (norm[size_t(a)] * norm[size_t(b)]), -0.999999, 0.999999)));
    }
  return f;
}

// connectivity: Fisher z of parcel correlations over the first fraction q of each run (at least a window), averaged
// over runs; the off-diagonal upper triangle, P (P - 1) / 2.
std::vector<double> connectivity_features(const EvalData& data, int s, double q) {
  const int64_t T = data.window, P = data.n_parcels;
  std::vector<double> f(size_t(P * (P - 1) / 2), 0.0);
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
}

// oracle (synthetic corpora): the subject's true coupling matrix, off-diagonal upper triangle, K (K - 1) / 2: what
// knowing the structure the traits change gives, whatever the scan time (the ceiling of the subject tasks).
std::vector<double> true_coupling(const EvalData& data, int s) {
  const int K = data.n_networks;
  const std::vector<float>& m = data.true_coupling.at(data.subjects[size_t(s)].id);
  std::vector<double> f;
  for (int a = 0; a < K; ++a)
    for (int b = a + 1; b < K; ++b) f.push_back(m[size_t(a * K + b)]);
  return f;
}

// The coded trait of a subject: diagnosis (control 0, any other 1), sex (F 1, M 0), age, score (the first score
// column); false where the subject has none.
bool trait_value(const std::string& task, const EvalSubject& sub, double* value) {
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
}

// The metrics over a set of held-out subjects (indices idx into truth and pred): accuracy, balanced accuracy and AUC
// of the two classes' scores pred [n, 2], or r and R² of the values pred [n].
std::map<std::string, double> trait_metrics(bool classes, const std::vector<double>& truth_y,
                                            const std::vector<double>& pred, const std::vector<size_t>& idx) {
  std::map<std::string, double> out;
  if (classes) {
    std::vector<int> truth, guess;
    std::vector<double> scores;
    for (size_t i : idx) {
      truth.push_back(int(truth_y[i]));
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
      t.push_back(truth_y[i]);
      p.push_back(pred[i]);
    }
    out["r"] = pearson(t.data(), p.data(), int64_t(t.size()));
    out["r2"] = r2(t.data(), p.data(), int64_t(t.size()));
  }
  return out;
}

// Ridge over the pre-training subjects' features x [n, d] and traits y (classes coded -1 / +1 one-vs-rest, k = 2, or
// values, k = 1), its penalty by 5-fold cross-validation over them: each subject its own group and its own interval
// (no purge between subjects).
Ridge fit_trait(const std::vector<double>& x, const std::vector<double>& train_y, bool classes, int d, uint64_t seed) {
  std::vector<double> y;
  for (double v : train_y)
    if (classes) {
      y.push_back(v == 0 ? 1.0 : -1.0);
      y.push_back(v == 1 ? 1.0 : -1.0);
    } else {
      y.push_back(v);
    }
  const size_t n = train_y.size();
  std::vector<int64_t> rows(n), group(n), zeros(n, 0), ends(n);
  std::iota(rows.begin(), rows.end(), 0);
  std::iota(group.begin(), group.end(), 0);
  std::iota(ends.begin(), ends.end(), 1);
  InnerCv cv;
  cv.k_inner = 5;
  cv.seed = seed;
  return fit_ridge_cv(x, y, d, classes ? 2 : 1, rows, group, group, zeros, ends, cv);
}

// The subjects with a trait: the pre-training ones to learn from, every held-out one to test on, with their values.
struct TraitSubjects {
  std::vector<int> train, test;
  std::vector<double> train_y, test_y;
};
TraitSubjects trait_subjects(const EvalScope& scope, const std::string& task) {
  TraitSubjects t;
  for (int s : scope.population) {
    double v;
    if (trait_value(task, scope.data.subjects[size_t(s)], &v)) t.train.push_back(s), t.train_y.push_back(v);
  }
  for (int s : scope.held_all) {
    double v;
    if (trait_value(task, scope.data.subjects[size_t(s)], &v)) t.test.push_back(s), t.test_y.push_back(v);
  }
  return t;
}

// One method of a subject task: ridge on the pre-training subjects' features (feats(subject, fraction), d wide) at
// their full scan time, tested on the held-out subjects at each fraction of theirs: the metrics (fold -1), their
// bootstrap sd over the held-out subjects (fold -2; the same draws on every rank) and the predictions.
void test_trait_method(const EvalScope& scope, const std::string& task, const std::string& method, int d,
                       const std::function<std::vector<double>(int, double)>& feats, const TraitSubjects& subjects,
                       RankResults& out) {
  const EvalOptions& options = scope.options;
  const bool classes = task_info(task).classification;
  std::vector<double> x;
  for (int s : subjects.train) {
    const auto f = feats(s, 1.0);
    x.insert(x.end(), f.begin(), f.end());
  }
  const Ridge r = fit_trait(x, subjects.train_y, classes, d, options.seed);
  const int k = classes ? 2 : 1;
  const std::vector<int>& test_s = subjects.test;
  const std::vector<double>& test_y = subjects.test_y;
  for (double q : options.fractions) {
    std::vector<double> xt;
    for (int s : test_s) {
      const auto f = feats(s, q);
      xt.insert(xt.end(), f.begin(), f.end());
    }
    const auto pred = r.predict(xt, int64_t(test_s.size()));
    std::vector<size_t> all(test_s.size());
    std::iota(all.begin(), all.end(), 0);
    for (const auto& [metric, value] : trait_metrics(classes, test_y, pred, all))
      out.add(task, method, q, "all", -1, metric, value);
    Rng rng = Rng::stream(options.seed, 0xb007, uint64_t(q * 1e6));
    std::map<std::string, std::vector<double>> boot;
    for (int b = 0; b < options.bootstrap; ++b) {
      std::vector<size_t> idx;
      for (size_t i = 0; i < all.size(); ++i) idx.push_back(size_t(rng.below(all.size())));
      for (const auto& [metric, value] : trait_metrics(classes, test_y, pred, idx)) boot[metric].push_back(value);
    }
    for (const auto& [metric, values] : boot)
      out.add(task, method, q, "all", -2, metric, mean_spread(values).sd);  // fold -2: bootstrap sd
    if (!options.predictions_dir.empty())
      for (size_t i = 0; i < test_s.size(); ++i) {
        std::string line =
            prediction_key(method, q, scope.data.subjects[size_t(test_s[i])].id, -1) + "," + csv_value(test_y[i]);
        for (int c = 0; c < k; ++c) (line += ",") += csv_value(pred[i * size_t(k) + size_t(c)]);
        out.predictions[task].push_back(line);
      }
  }
}

}  // namespace

void evaluate_subject_tasks(const EvalScope& scope, const model::BrainModel& pretrained, RankResults& out) {
  const EvalData& data = scope.data;
  std::vector<std::string> subject_tasks;
  for (const TaskInfo& t : tasks())
    if (t.kind == TaskKind::subject && scope.wants(t.name) && scope.options.part == 0) subject_tasks.push_back(t.name);
  if (subject_tasks.empty()) return;
  const SubjectWindows sw = subject_windows(data);
  scope.log("eval: subject tasks: encoder features of " + std::to_string(sw.windows.size()) + " windows of " +
            std::to_string(data.subjects.size()) + " subjects");
  const std::vector<double> wf = window_features(pretrained, data, sw.windows, scope.comm, scope.options.device);
  const int D = pretrained.config().d_model;
  // probe_conn keeps every window's P x D parcel features in memory: only where they fit in 2 GiB (about 30,000
  // windows of 64 parcels x 128 dimensions); otherwise it is left out with a note.
  const bool with_conn = double(sw.windows.size()) * double(data.n_parcels) * D * 8 < 2.0 * (1 << 30);
  if (!with_conn)
    out.note("probe_conn: skipped, the parcel features of " + std::to_string(sw.windows.size()) + " windows would "
             "take more than 2 GiB (fewer subjects: --population)");
  const std::vector<double> pf =
      with_conn ? window_features(pretrained, data, sw.windows, scope.comm, scope.options.device, TokenPool::per_parcel)
                : std::vector<double>();
  std::vector<double> parcel_mean(size_t(data.n_parcels) * size_t(D), 0.0);  // over the pre-training subjects' windows
  {
    int64_t n = 0;
    for (size_t w = 0; with_conn && w < sw.windows.size(); ++w)
      if (!data.subjects[size_t(sw.windows[w].subject)].held_out) {
        for (size_t j = 0; j < parcel_mean.size(); ++j) parcel_mean[j] += pf[w * parcel_mean.size() + j];
        ++n;
      }
    for (auto& v : parcel_mean) v /= double(std::max<int64_t>(1, n));
  }
  const int dm = pretrained.config().n_time() * pretrained.config().d_model;
  const int P = int(data.n_parcels), dc = P * (P - 1) / 2, K = data.n_networks, dk = K * (K - 1) / 2;
  RankResults found;  // every rank computes the same; rank 0 keeps the rows and predictions
  for (const auto& task : subject_tasks) {
    const TraitSubjects subjects = trait_subjects(scope, task);
    if (subjects.train.size() < 4 || subjects.test.size() < 2 ||
        (task_info(task).classification &&
         std::set<double>(subjects.train_y.begin(), subjects.train_y.end()).size() < 2)) {
      found.note(task + ": skipped, too few subjects with this trait (" + std::to_string(subjects.train.size()) +
                 " pre-training, " + std::to_string(subjects.test.size()) + " held out)");
      continue;
    }
    std::vector<std::string> subject_methods = {"connectivity", "probe"};
    if (with_conn) subject_methods.push_back("probe_conn");
    bool have_truth = !data.true_coupling.empty();
    for (int s : subjects.train) have_truth = have_truth && data.true_coupling.count(data.subjects[size_t(s)].id);
    for (int s : subjects.test) have_truth = have_truth && data.true_coupling.count(data.subjects[size_t(s)].id);
    if (have_truth) subject_methods.push_back("oracle");
    for (const std::string& method : subject_methods) {
      const int d = method == "probe" ? dm : method == "oracle" ? dk : dc;
      const auto feats = [&](int s, double q) {
        return method == "probe"        ? probe_features(sw, wf, dm, s, q)
               : method == "probe_conn" ? model_connectivity_features(sw, pf, parcel_mean, P, D, s, q)
               : method == "oracle"     ? true_coupling(data, s)
                                        : connectivity_features(data, s, q);
      };
      test_trait_method(scope, task, method, d, feats, subjects, found);
    }
  }
  for (const auto& n : found.notes) out.note(n);
  if (scope.comm.rank() != 0) return;
  out.rows.insert(out.rows.end(), found.rows.begin(), found.rows.end());
  for (auto& [task, lines] : found.predictions) out.predictions[task] = std::move(lines);
}

}  // namespace bfm::launch::eval
