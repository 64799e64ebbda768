// The task registry (tasks.h): the one list of bfm eval's tasks and methods.
#include "launch/eval/tasks.h"

#include <algorithm>
#include <limits>

#include "base/error.h"

namespace bfm::launch::eval {

const std::vector<TaskInfo>& tasks() {
  static const std::vector<TaskInfo> all = {
      {"category", TaskKind::decoding, true, {"balanced_accuracy", "accuracy", "auc"}, "category", true},
      {"embedding", TaskKind::decoding, false, {"r", "r2"}, "embedding", true},
      {"retrieval", TaskKind::decoding, false, {"top1", "top5", "top1_novel"}, "embedding", false},
      {"encoding", TaskKind::encoding, false, {"r", "r2"}, "encoding", false},
      {"diagnosis", TaskKind::subject, true, {"auc", "balanced_accuracy", "accuracy"}, "diagnosis", false},
      {"sex", TaskKind::subject, true, {"auc", "balanced_accuracy", "accuracy"}, "sex", false},
      {"age", TaskKind::subject, false, {"r", "r2"}, "age", false},
      {"score", TaskKind::subject, false, {"r", "r2"}, "score", false},
  };
  return all;
}

std::vector<std::string> task_names() {
  std::vector<std::string> out;
  for (const auto& t : tasks()) out.push_back(t.name);
  return out;
}

bool is_task(const std::string& name) {
  return std::any_of(tasks().begin(), tasks().end(), [&](const TaskInfo& t) { return t.name == name; });
}

std::vector<std::string> fine_tunable_tasks() {
  std::vector<std::string> out;
  for (const auto& t : tasks())
    if (t.fine_tunable) out.push_back(t.name);
  return out;
}

std::string fine_tunable_list(const std::string& sep) {
  std::string out;
  for (const auto& name : fine_tunable_tasks()) out += (out.empty() ? "" : sep) + name;
  return out;
}

const TaskInfo& task_info(const std::string& name) {
  for (const auto& t : tasks())
    if (t.name == name) return t;
  fail("eval: unknown task '", name, "'");
}

std::string main_metric(const std::string& task) { return task_info(task).metrics.front(); }

std::vector<std::string> row_metrics() {
  std::vector<std::string> out;
  for (const auto& t : tasks())
    for (const auto& m : t.metrics)
      if (std::find(out.begin(), out.end(), m) == out.end()) out.push_back(m);
  out.push_back(kCandidates);
  return out;
}

const std::vector<std::string>& methods() {
  static const std::vector<std::string> all = {"ridge",     "ridge_pop",  "pca",      "pca_pop",    "stimridge",
                                               "stimridge_pop", "connectivity", "probe", "probe_pop", "probe_conn",
                                               "random",    "random_pop", "finetune", "scratch",    "clip",
                                               "oracle",    "oracle_pop"};
  return all;
}

bool is_population_method(const std::string& method) {
  const std::string b = base_method(method);
  return b == "ridge_pop" || b == "pca_pop" || b == "stimridge_pop" || b == "probe_pop" || b == "random_pop" ||
         b == "oracle_pop" || b == "finetune" || b == "scratch";
}

std::string per_subject_form(const std::string& method) {
  const std::string b = base_method(method);
  const auto pop = b.rfind("_pop");
  return pop != std::string::npos && pop + 4 == b.size() ? b.substr(0, pop) : "";
}

std::string labelled_suffix(int labelled) { return labelled < 0 ? "" : "@" + std::to_string(labelled); }

std::string base_method(const std::string& name) { return name.substr(0, name.find('@')); }

int labelled_of(const std::string& name) {
  const auto at = name.find('@');
  return at == std::string::npos ? -1 : std::stoi(name.substr(at + 1));
}

std::vector<std::string> method_names(const std::vector<int>& labelled) {
  std::vector<std::string> out = methods();
  for (int k : labelled)
    if (k >= 0)
      for (const auto& m : methods())
        if (is_population_method(m)) out.push_back(m + labelled_suffix(k));
  return out;
}

bool method_before(const std::string& a, const std::string& b) {
  const auto rank = [](const std::string& m) {
    const auto it = std::find(methods().begin(), methods().end(), base_method(m));
    const int k = labelled_of(m);
    return std::pair<long, long>(it - methods().begin(), k < 0 ? std::numeric_limits<long>::max() : k);
  };
  return rank(a) < rank(b);
}

double chance_level(const std::string& task, const std::string& metric, int n_categories,
                    const std::vector<double>& candidates) {
  if (metric == "accuracy" || metric == "balanced_accuracy")
    return 1.0 / (task_info(task).kind == TaskKind::decoding ? std::max(1, n_categories) : 2);
  if (metric == "auc") return 0.5;
  if (metric == "top1" || metric == "top5" || metric == "top1_novel") {
    const double k = metric == "top5" ? 5.0 : 1.0;
    double m = 0, n = 0;
    for (double c : candidates) {
      m += std::min(1.0, k / c);
      n += 1;
    }
    return n > 0 ? m / n : std::numeric_limits<double>::quiet_NaN();
  }
  return 0;
}

std::vector<std::string> prediction_files() {
  std::vector<std::string> out;
  for (const auto& t : tasks())
    if (t.decoder == t.name) out.push_back(t.name);
  return out;
}

std::string predictions_header(const std::string& task, int n_categories, int64_t stim_dim, int64_t n_parcels) {
  const TaskInfo& t = task_info(task);
  std::string h = "method,fraction,subject,fold";
  const auto wide = [&](const char* prefix, int64_t n) {
    for (int64_t c = 0; c < n; ++c) (h += ",").append(prefix).append(std::to_string(c));
  };
  if (t.kind == TaskKind::decoding && t.classification) {  // category: the class, then every class's score
    h += ",truth,predicted";
    wide("score_", n_categories);
  } else if (t.kind == TaskKind::decoding) {  // embedding: the stimulus, its embedding, the decoded one
    h += ",stimulus";
    wide("truth_", stim_dim);
    wide("pred_", stim_dim);
  } else if (t.kind == TaskKind::encoding) {  // each parcel's mean response and its prediction
    wide("truth_", n_parcels);
    wide("pred_", n_parcels);
  } else if (t.classification) {  // diagnosis, sex: the coded class (0 / 1), both classes' scores
    h += ",truth,score_0,score_1";
  } else {
    h += ",truth,predicted";
  }
  return h;
}

}  // namespace bfm::launch::eval
