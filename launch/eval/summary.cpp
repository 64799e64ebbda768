// The summary of bfm eval's result rows (summary.h).
#include "launch/eval/summary.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "launch/eval/stats.h"
#include "launch/eval/tasks.h"

namespace bfm::launch::eval {

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
}

}  // namespace bfm::launch::eval
