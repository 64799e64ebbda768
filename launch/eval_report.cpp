#include "launch/eval_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "runtime/error.h"
#ifdef BFM_WITH_ZLIB
#include "launch/plot.h"
#include "runtime/png.h"
#endif

namespace bfm::launch::eval {

namespace {
namespace fs = std::filesystem;

const std::vector<std::string> kTaskOrder = {"category", "embedding", "retrieval", "encoding",
                                             "diagnosis", "sex", "age", "score"};
const std::vector<std::string> kMethodOrder = {"ridge", "ridge_pop", "connectivity", "probe", "probe_pop",
                                               "finetune", "scratch", "clip"};

std::string num(double v, int digits = 3) {
  if (!std::isfinite(v)) return "nan";
  char b[32];
  std::snprintf(b, sizeof b, "%.*f", digits, v);
  return b;
}

std::string pct(double f) {
  char b[32];
  std::snprintf(b, sizeof b, "%g%%", f * 100);
  return b;
}

void write_text(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    out << text;
    require(static_cast<bool>(out), tmp.string(), ": cannot write");
  }
  fs::rename(tmp, path);
}

const SummaryRow* find(const EvalReport& r, const std::string& task, const std::string& method,
                       const std::string& metric, double fraction) {
  for (const auto& s : r.summary)
    if (s.task == task && s.method == method && s.metric == metric && std::abs(s.fraction - fraction) < 1e-12) return &s;
  return nullptr;
}

std::vector<std::string> methods_of(const EvalReport& r, const std::string& task) {
  std::set<std::string> present;
  for (const auto& s : r.summary)
    if (s.task == task) present.insert(s.method);
  std::vector<std::string> out;
  for (const auto& m : kMethodOrder)
    if (present.count(m)) out.push_back(m);
  return out;
}

std::vector<std::string> tasks_of(const EvalReport& r) {
  std::set<std::string> present;
  for (const auto& s : r.summary) present.insert(s.task);
  std::vector<std::string> out;
  for (const auto& t : kTaskOrder)
    if (present.count(t)) out.push_back(t);
  return out;
}

#ifdef BFM_WITH_ZLIB
const runtime::Rgb kColours[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40},
                                 {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {127, 127, 127}};

runtime::Rgb colour_of(const std::string& method) {
  const auto it = std::find(kMethodOrder.begin(), kMethodOrder.end(), method);
  return kColours[size_t(it - kMethodOrder.begin()) % 8];
}
#endif

}  // namespace

std::string headline_table(const EvalReport& report, double fraction) {
  std::ostringstream md;
  md << "| task | metric | chance |";
  std::vector<std::string> methods;
  for (const auto& m : kMethodOrder)
    for (const auto& t : tasks_of(report)) {
      const auto ms = methods_of(report, t);
      if (std::find(ms.begin(), ms.end(), m) != ms.end() && std::find(methods.begin(), methods.end(), m) == methods.end())
        methods.push_back(m);
    }
  for (const auto& m : methods) md << " " << m << " |";
  md << "\n| --- | --- | --- |";
  for (size_t i = 0; i < methods.size(); ++i) md << " --- |";
  md << "\n";
  for (const auto& task : tasks_of(report)) {
    const std::string metric = main_metric(task);
    const SummaryRow* any = nullptr;
    for (const auto& m : methods)
      if (!any) any = find(report, task, m, metric, fraction);
    md << "| " << task << " | " << metric << " | " << (any ? num(any->chance, 3) : "") << " |";
    for (const auto& m : methods) {
      const SummaryRow* s = find(report, task, m, metric, fraction);
      md << " " << (s ? num(s->mean) + " ± " + num(s->sd, 2) : "") << " |";
    }
    md << "\n";
  }
  return md.str();
}

std::string write_report(const std::string& dir, const EvalReport& report, const EvalOptions& options,
                         const nlohmann::json& provenance, const std::vector<double>& headline) {
  fs::create_directories(dir);
  const fs::path d(dir);
  {
    std::ostringstream csv;
    csv << "task,method,fraction,subject,fold,metric,value\n";
    csv.precision(17);
    for (const auto& r : report.rows)
      csv << r.task << "," << r.method << "," << r.fraction << "," << r.subject << "," << r.fold << "," << r.metric
          << "," << r.value << "\n";
    write_text(d / "results.csv", csv.str());
  }
  {
    std::ostringstream csv;
    csv << "task,method,fraction,metric,mean,sd,n,chance\n";
    csv.precision(17);
    for (const auto& s : report.summary)
      csv << s.task << "," << s.method << "," << s.fraction << "," << s.metric << "," << s.mean << "," << s.sd << ","
          << s.n << "," << s.chance << "\n";
    write_text(d / "summary.csv", csv.str());
  }
  std::ostringstream md;
  md << "# bfm eval\n\n";
  md << "Corpus `" << provenance.value("corpus", "") << "`, checkpoint `" << provenance.value("checkpoint", "")
     << "`: " << report.held_out_subjects << " held-out subjects evaluated, " << report.population_subjects
     << " pre-training subjects for the population methods, " << report.trials << " stimulus trials. " << options.folds
     << "-fold cross-validation by stimulus within each held-out subject (training windows overlapping a test window "
        "purged), ridge regularisation chosen inside the training folds. Mean ± sd over subjects x folds (subject "
        "tasks: over held-out subjects, bootstrap sd). Methods and metrics: docs/EVALUATION.md.\n\n";
  std::string first_table;
  for (double f : headline) {
    const std::string t = headline_table(report, f);
    if (first_table.empty()) first_table = t;
    md << "## With " << pct(f) << " of each new subject's data\n\n" << t << "\n";
  }
  md << "## Every metric\n\n| task | method | metric | chance |";
  for (double f : options.fractions) md << " " << pct(f) << " |";
  md << "\n| --- | --- | --- | --- |";
  for (size_t i = 0; i < options.fractions.size(); ++i) md << " --- |";
  md << "\n";
  for (const auto& task : tasks_of(report))
    for (const auto& m : methods_of(report, task)) {
      std::set<std::string> metrics;
      for (const auto& s : report.summary)
        if (s.task == task && s.method == m) metrics.insert(s.metric);
      for (const auto& metric : metrics) {
        const SummaryRow* any = find(report, task, m, metric, options.fractions.back());
        md << "| " << task << " | " << m << " | " << metric << " | " << (any ? num(any->chance) : "") << " |";
        for (double f : options.fractions) {
          const SummaryRow* s = find(report, task, m, metric, f);
          md << " " << (s ? num(s->mean) + " ± " + num(s->sd, 2) : "") << " |";
        }
        md << "\n";
      }
    }
  if (!report.notes.empty()) {
    md << "\n## Notes\n\n";
    for (const auto& n : report.notes) md << "- " << n << "\n";
  }
#ifdef BFM_WITH_ZLIB
  md << "\n## Plots\n\n";
  for (const auto& task : tasks_of(report)) {
    const std::string metric = main_metric(task);
    Chart chart;
    chart.title = task + ": " + metric + " vs % of the new subject's data";
    chart.x_label = "log10 % of the subject's training data";
    chart.y_label = metric;
    double chance = NAN;
    for (const auto& m : methods_of(report, task)) {
      Series s;
      s.name = m;
      s.colour = colour_of(m);
      s.line_width = 2;
      s.markers = true;
      for (double f : options.fractions) {
        const SummaryRow* r = find(report, task, m, metric, f);
        if (!r) continue;
        s.x.push_back(std::log10(f * 100));
        s.y.push_back(r->mean);
        chance = r->chance;
      }
      if (!s.x.empty()) chart.series.push_back(s);
    }
    if (chart.series.empty()) continue;
    if (std::isfinite(chance)) {
      Series c;
      c.name = "chance";
      c.colour = {160, 160, 160};
      c.line_width = 1;
      for (double f : options.fractions) {
        c.x.push_back(std::log10(f * 100));
        c.y.push_back(chance);
      }
      chart.series.insert(chart.series.begin(), c);
    }
    runtime::RgbImage image(900, 480, {255, 255, 255});
    draw_chart(image, 0, 0, 900, 480, chart);
    const std::string file = "fewshot_" + task + ".png";
    runtime::write_png((d / file).string(), image);
    md << "![" << task << "](" << file << ")\n";
  }
  if (!report.encoding_map.empty()) {
    Chart chart;
    chart.title = "encoding: per-parcel r on held-out stimuli (100% of the data)";
    chart.x_label = "parcel";
    chart.y_label = "r";
    for (const auto& [method, r] : report.encoding_map) {
      Series s;
      s.name = method;
      s.colour = colour_of(method);
      s.line_width = 0;
      s.markers = true;
      for (size_t p = 0; p < r.size(); ++p) {
        s.x.push_back(double(p));
        s.y.push_back(r[p]);
      }
      chart.series.push_back(s);
    }
    runtime::RgbImage image(900, 480, {255, 255, 255});
    draw_chart(image, 0, 0, 900, 480, chart);
    runtime::write_png((d / "encoding_map.png").string(), image);
    md << "![encoding map](encoding_map.png)\n";
    std::ostringstream csv;
    csv << "parcel";
    for (const auto& [method, r] : report.encoding_map) csv << "," << method;
    csv << "\n";
    for (size_t p = 0; p < report.encoding_map.begin()->second.size(); ++p) {
      csv << p;
      for (const auto& [method, r] : report.encoding_map) csv << "," << r[p];
      csv << "\n";
    }
    write_text(d / "encoding_map.csv", csv.str());
  }
#endif
  write_text(d / "summary.md", md.str());
  nlohmann::json config = provenance;
  config["tasks"] = options.tasks;
  config["folds"] = options.folds;
  config["fractions"] = options.fractions;
  config["seed"] = options.seed;
  config["bootstrap"] = options.bootstrap;
  config["notes"] = report.notes;
  write_text(d / "config.json", config.dump(2) + "\n");
  return first_table;
}

}  // namespace bfm::launch::eval

