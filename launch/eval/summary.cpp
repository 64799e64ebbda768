// The summary of bfm eval's result rows (summary.h).
#include "launch/eval/summary.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <map>
#include <tuple>

#include "launch/eval/stats.h"
#include "launch/eval/tasks.h"

namespace bfm::launch::eval {

namespace {

void compare(EvalReport& report) {
  report.comparisons.clear();
  // Per task, method and fraction: each held-out subject's main metric over its folds.
  std::map<std::tuple<std::string, std::string, double>, std::map<std::string, std::vector<double>>> folds;
  for (const auto& r : report.rows)
    if (is_task(r.task) && task_info(r.task).kind == TaskKind::decoding && r.fold >= 0 &&
        r.metric == main_metric(r.task))
      folds[{r.task, r.method, r.fraction}][r.subject].push_back(r.value);
  const auto summary_mean = [&](const std::string& task, const std::string& method, double fraction) {
    for (const auto& s : report.summary)
      if (s.task == task && s.method == method && s.metric == main_metric(task) && s.fraction == fraction) return s.mean;
    return std::numeric_limits<double>::quiet_NaN();
  };
  std::vector<int> ks;
  for (const auto& g : report.labelled) ks.push_back(g.k);
  if (ks.empty()) ks.push_back(-1);
  std::set<std::pair<std::string, double>> task_fractions;
  for (const auto& [key, subjects] : folds) task_fractions.insert({std::get<0>(key), std::get<2>(key)});
  for (const TaskInfo& info : tasks())
    for (int k : ks)
      for (const auto& [task, fraction] : task_fractions) {
        if (task != info.name) continue;
        const std::string sfx = labelled_suffix(k);
        std::string best;
        double best_mean = -std::numeric_limits<double>::infinity();
        // clip (retrieval only) reads no label at all: a candidate at every K.
        for (const std::string& m : {std::string("probe"), "probe_pop" + sfx, "finetune" + sfx, std::string("clip")}) {
          const double v = summary_mean(task, m, fraction);
          if (std::isfinite(v) && v > best_mean) best = m, best_mean = v;
        }
        if (best.empty()) continue;
        const auto& mine = folds.at({task, best, fraction});
        for (const std::string& b :
             {std::string("ridge"), "ridge_pop" + sfx, "scratch" + sfx, std::string("pca"), "pca_pop" + sfx,
              std::string("stimridge"), "stimridge_pop" + sfx, std::string("random"), "random_pop" + sfx}) {
          auto other = folds.find({task, b, fraction});
          if (other == folds.end()) continue;
          std::vector<double> diffs;
          for (const auto& [subject, values] : mine) {
            auto theirs = other->second.find(subject);
            if (theirs == other->second.end()) continue;
            const MeanSpread a = mean_spread(values), c = mean_spread(theirs->second);
            if (a.n > 0 && c.n > 0) diffs.push_back(a.mean - c.mean);
          }
          const PairedInterval pi = paired_t_interval(diffs, 0.95);
          Comparison cmp;
          cmp.task = task, cmp.metric = main_metric(task), cmp.method = best, cmp.baseline = b;
          cmp.labelled = k, cmp.fraction = fraction;
          cmp.mean = pi.mean, cmp.low = pi.low, cmp.high = pi.high, cmp.sd = pi.sd, cmp.n = pi.n;
          report.comparisons.push_back(cmp);
        }
      }
}

}  // namespace

void summarize(EvalReport& report) {
  report.summary.clear();
  std::map<std::tuple<std::string, std::string, std::string, double>, std::vector<double>> groups, boot_sd;
  std::map<std::tuple<std::string, std::string, double>, std::vector<double>> candidates;  // behind top-k's chance
  for (const auto& r : report.rows) {
    if (r.metric == kCandidates) {
      candidates[{r.task, r.method, r.fraction}].push_back(r.value);
      continue;
    }
    if (r.fold == -2) boot_sd[{r.task, r.method, r.metric, r.fraction}].push_back(r.value);
    else groups[{r.task, r.method, r.metric, r.fraction}].push_back(r.value);
  }
  for (const auto& [key, values] : groups) {
    const auto& [task, method, metric, fraction] = key;
    SummaryRow s;
    s.task = task, s.method = method, s.metric = metric, s.fraction = fraction;
    const MeanSpread ms = mean_spread(values);
    s.mean = ms.mean, s.sd = ms.sd, s.n = ms.n;
    auto b = boot_sd.find(key);
    if (b != boot_sd.end() && !b->second.empty()) s.sd = b->second[0];
    s.chance = chance_level(task, metric, report.n_categories, candidates[{task, method, fraction}]);
    report.summary.push_back(s);
  }
  compare(report);
}

}  // namespace bfm::launch::eval
