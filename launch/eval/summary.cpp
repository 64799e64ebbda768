// The summary of bfm eval's result rows (summary.h).
#include "launch/eval/summary.h"

#include <algorithm>
#include <limits>
#include <map>
#include <tuple>

#include "launch/eval/stats.h"

namespace bfm::launch::eval {

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
}  // namespace

void summarize(EvalReport& report) {
  report.summary.clear();
  std::map<std::tuple<std::string, std::string, std::string, double>, std::vector<double>> groups, boot_sd;
  for (const auto& r : report.rows) {
    if (r.metric == "candidates") continue;
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
    if (metric == "accuracy" || metric == "balanced_accuracy")
      s.chance = task == "category" ? 1.0 / std::max(1, report.n_categories) : 0.5;
    else if (metric == "auc") s.chance = 0.5;
    else if (metric == "top1" || metric == "top5") {
      double m = 0, n = 0;  // mean over the rows' candidate counts of k / candidates
      for (const auto& r : report.rows)
        if (r.task == task && r.method == method && r.fraction == fraction && r.metric == "candidates") {
          m += std::min(1.0, (metric == "top1" ? 1.0 : 5.0) / r.value);
          n += 1;
        }
      s.chance = n > 0 ? m / n : kNaN;
    } else s.chance = 0;
    report.summary.push_back(s);
  }

}

}  // namespace bfm::launch::eval
