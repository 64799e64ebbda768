#include "launch/eval/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "base/error.h"
#include "launch/eval/summary.h"
#include "launch/eval/tasks.h"
#ifdef BFM_WITH_ZLIB
#include "launch/plot/charts.h"
#include "runtime/png.h"
#endif

namespace bfm::launch::eval {

namespace {
namespace fs = std::filesystem;

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
  std::vector<std::string> out(present.begin(), present.end());
  std::sort(out.begin(), out.end(), method_before);
  return out;
}

// The K whose population methods the headline tables show: every pre-training subject where evaluated, else the
// largest K (report.labelled is ascending, every subject last).
int headline_labelled(const EvalReport& r) { return r.labelled.empty() ? -1 : r.labelled.back().k; }

std::string labelled_name(int k) { return k < 0 ? "all" : std::to_string(k); }

std::vector<std::string> tasks_of(const EvalReport& r) {
  std::set<std::string> present;
  for (const auto& s : r.summary) present.insert(s.task);
  std::vector<std::string> out;
  for (const auto& t : task_names())
    if (present.count(t)) out.push_back(t);
  return out;
}

#ifdef BFM_WITH_ZLIB
const runtime::Rgb kColours[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},
                                 {148, 103, 189}, {140, 86, 75},  {227, 119, 194}, {188, 189, 34},
                                 {23, 190, 207},  {60, 60, 60},   {174, 199, 232}, {255, 187, 120}};

runtime::Rgb colour_of(const std::string& method) {
  const auto it = std::find(methods().begin(), methods().end(), base_method(method));
  return kColours[size_t(it - methods().begin()) % 12];
}
#endif

}  // namespace

std::string headline_table(const EvalReport& report, double fraction) {
  std::ostringstream md;
  md << "| task | metric | chance |";
  // The methods any task has, in the report's order; population methods of the headline K only.
  std::set<std::string> any_task;
  for (const auto& t : tasks_of(report))
    for (const auto& m : methods_of(report, t))
      if (!is_population_method(m) || labelled_of(m) == headline_labelled(report)) any_task.insert(m);
  std::vector<std::string> shown(any_task.begin(), any_task.end());
  std::sort(shown.begin(), shown.end(), method_before);
  for (const auto& m : shown) md << " " << m << " |";
  md << "\n| --- | --- | --- |";
  for (size_t i = 0; i < shown.size(); ++i) md << " --- |";
  md << "\n";
  for (const auto& task : tasks_of(report)) {
    const std::string metric = main_metric(task);
    const SummaryRow* any = nullptr;
    for (const auto& m : shown)
      if (!any) any = find(report, task, m, metric, fraction);
    md << "| " << task << " | " << metric << " | " << (any ? num(any->chance, 3) : "") << " |";
    for (const auto& m : shown) {
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
  {
    std::ostringstream csv;
    csv << "task,metric,labelled,fraction,method,baseline,mean_difference,ci_low,ci_high,sd,n\n";
    csv.precision(17);
    for (const auto& c : report.comparisons)
      csv << c.task << "," << c.metric << "," << labelled_name(c.labelled) << "," << c.fraction << "," << c.method
          << "," << c.baseline << "," << c.mean << "," << c.low << "," << c.high << "," << c.sd << "," << c.n << "\n";
    write_text(d / "comparisons.csv", csv.str());
  }
  if (!report.pca_table.empty()) {
    std::string text;
    for (const auto& line : report.pca_table) text += line + "\n";
    write_text(d / "pca.csv", text);
  }
  if (!report.probe_table.empty()) {
    std::string text;
    for (const auto& line : report.probe_table) text += line + "\n";
    write_text(d / "probe_basis.csv", text);
  }
  if (!report.stimridge_table.empty()) {
    std::string text;
    for (const auto& line : report.stimridge_table) text += line + "\n";
    write_text(d / "stimridge.csv", text);
  }
  std::ostringstream md;
  md << "# bfm eval\n\n";
  md << "Corpus `" << provenance.value("corpus", "") << "`, checkpoint `" << provenance.value("checkpoint", "")
     << "`: " << report.held_out_subjects << " held-out subjects evaluated"
     << (provenance.contains("heldout_study")
             ? " (leave one study out: every subject of study " + provenance["heldout_study"].get<std::string>() + ")"
             : std::string())
     << ", " << report.population_subjects
     << " pre-training subjects for the population methods, " << report.trials << " stimulus trials. " << options.folds
     << "-fold cross-validation by " << options.cv_unit
     << " within each held-out subject (training windows overlapping a test window "
        "purged), ridge regularisation chosen inside the training folds. Mean ± sd over subjects x folds (subject "
        "tasks: over held-out subjects, bootstrap sd). Methods and metrics: docs/EVALUATION.md.\n\n";
  if (!report.pca.is_null())
    md << "The PCA baseline (pca, pca_pop): " << report.pca.value("components", 0) << " components of the "
       << report.pca.value("subjects", 0) << " pre-training subjects' time series (" << report.pca.value("patches", 0)
       << " patches), " << num(100 * report.pca.value("explained_variance", 0.0), 1)
       << "% of their variance (pca.csv).\n\n";
  if (!report.stimridge.is_null())
    md << "The stimulus map (stimridge, stimridge_pop; category): ridge from the raw window to the stimulus embedding "
          "over the "
       << report.stimridge.value("subjects", 0) << " pre-training subjects' " << report.stimridge.value("trials", 0)
       << " stimulus trials (alpha " << num(report.stimridge.value("alpha", 0.0), 3)
       << ", stimridge.csv), its decoded embedding as features: the linear model that sees what the contrastive "
          "objective sees, the stimuli of every pre-training subject and no category label.\n\n";
  if (!report.probe_basis.is_null())
    md << "The probe's features (probe, probe_pop): every token on " << report.probe_basis.value("components", 0)
       << " of the encoder's " << report.probe_basis.value("d_model", 0) << " token dimensions' principal components ("
       << report.probe_basis.value("tokens", 0) << " unlabelled tokens of pre-training windows), "
       << num(100 * report.probe_basis.value("explained_variance", 0.0), 1) << "% of their variance (probe_basis.csv). "
       << "The untrained control (random, random_pop): the same probe, as many components, on the same architecture "
          "with its initial weights: what probe gains over it is what pre-training gave.\n\n";
  std::string first_table;
  for (double f : headline) {
    const std::string t = headline_table(report, f);
    if (first_table.empty()) first_table = t;
    md << "## With " << pct(f) << " of each new subject's data\n\n" << t << "\n";
  }
  if (!report.comparisons.empty()) {
    md << "## Paired comparisons\n\nThe pre-trained method with the best mean against each baseline: the mean over "
          "held-out subjects of the paired difference of the main metric (each subject's mean over folds), with its "
          "95 % paired t interval (t with n - 1 degrees of freedom). The best method is chosen on the same results, "
          "so its differences lean optimistic. Every fraction: comparisons.csv.\n\n"
          "| task | metric | labelled | fraction | method | baseline | difference | 95 % interval | n |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    for (const auto& c : report.comparisons)
      if (std::find_if(headline.begin(), headline.end(), [&](double f) { return std::abs(f - c.fraction) < 1e-12; }) !=
          headline.end())
        md << "| " << c.task << " | " << c.metric << " | " << labelled_name(c.labelled) << " | " << pct(c.fraction)
           << " | " << c.method << " | " << c.baseline << " | " << num(c.mean) << " | [" << num(c.low) << ", "
           << num(c.high) << "] | " << c.n << " |\n";
    md << "\n";
  }
  if (report.labelled.size() > 1 || headline_labelled(report) >= 0) {
    md << "## Label-scarce curve\n\nThe population methods learn from the labels of K pre-training subjects only "
          "(--labelled-subjects; pre-training, the PCA basis and the stimulus map used every subject, unlabelled). "
          "With K = 0 they are their per-subject forms (ridge, pca, stimridge, probe, random, oracle); finetune and "
          "scratch have none (-). Main metric, mean ± sd over held-out subjects x folds.\n\n";
    std::vector<std::string> bases;  // the population methods present, in registry order
    for (const auto& m : methods())
      if (is_population_method(m))
        for (const auto& t : tasks_of(report))
          for (const auto& present : methods_of(report, t))
            if (base_method(present) == m && std::find(bases.begin(), bases.end(), m) == bases.end()) bases.push_back(m);
    for (const auto& task : tasks_of(report)) {
      if (task_info(task).kind == TaskKind::subject) continue;
      const std::string metric = main_metric(task);
      for (double f : headline) {
        md << "**" << task << "**, " << metric << ", " << pct(f) << " of each new subject's data\n\n| K |";
        for (const auto& b : bases) md << " " << b << " |";
        md << "\n| --- |";
        for (size_t i = 0; i < bases.size(); ++i) md << " --- |";
        md << "\n";
        for (const auto& g : report.labelled) {
          md << "| " << labelled_name(g.k) << " |";
          for (const auto& b : bases) {
            const std::string m = g.k == 0 ? per_subject_form(b) : b + labelled_suffix(g.k);
            const SummaryRow* s = m.empty() ? nullptr : find(report, task, m, metric, f);
            md << " " << (s ? num(s->mean) + " ± " + num(s->sd, 2) : "-") << " |";
          }
          md << "\n";
        }
        md << "\n";
      }
    }
    for (const auto& g : report.labelled)
      if (g.k > 0) {
        md << "- K = " << g.k << ":";
        for (const auto& id : g.subjects) md << " " << id;
        md << "\n";
      }
    md << "\n";
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
  config["cv_unit"] = options.cv_unit;
  config["fractions"] = options.fractions;
  config["seed"] = options.seed;
  config["bootstrap"] = options.bootstrap;
  config["notes"] = report.notes;
  config["part"] = options.part;
  config["parts"] = options.parts;
  config["held_out_subjects"] = report.held_out_subjects;
  config["population_subjects"] = report.population_subjects;
  config["trials"] = report.trials;
  config["n_categories"] = report.n_categories;
  config["encoding_folds"] = report.encoding_folds;
  config["labelled_seed"] = options.labelled_seed;
  config["pca_components"] = options.pca_components;
  config["probe_components"] = options.probe_components;
  config["labelled"] = nlohmann::json::array();
  for (const auto& g : report.labelled)
    config["labelled"].push_back({{"k", labelled_name(g.k)}, {"subjects", g.subjects}});
  if (!report.pca.is_null()) config["pca"] = report.pca;
  if (!report.probe_basis.is_null()) config["probe_basis"] = report.probe_basis;
  if (!report.stimridge.is_null()) config["stimridge"] = report.stimridge;
  write_text(d / "config.json", config.dump(2) + "\n");
  return first_table;
}

EvalReport read_report(const std::string& dir, nlohmann::json* provenance) {
  const fs::path d(dir);
  const std::string cfg_path = (d / "config.json").string();
  std::ifstream cin(cfg_path);
  require(static_cast<bool>(cin), cfg_path, ": missing (not a bfm eval report folder)");
  nlohmann::json cfg;
  try {
    cin >> cfg;
  } catch (const std::exception& e) {
    fail(cfg_path, ": not JSON (", e.what(), ")");
  }
  EvalReport r;
  try {
    r.held_out_subjects = cfg.at("held_out_subjects").get<int>();
    r.population_subjects = cfg.at("population_subjects").get<int>();
    r.trials = cfg.at("trials").get<int64_t>();
    r.n_categories = cfg.at("n_categories").get<int>();
    r.notes = cfg.value("notes", std::vector<std::string>{});
    r.encoding_folds = cfg.value("encoding_folds", std::map<std::string, double>{});
    for (const auto& g : cfg.value("labelled", nlohmann::json::array())) {
      const std::string k = g.at("k").get<std::string>();
      r.labelled.push_back({k == "all" ? -1 : std::stoi(k), g.at("subjects").get<std::vector<std::string>>()});
    }
    if (cfg.contains("pca")) r.pca = cfg["pca"];
    if (cfg.contains("probe_basis")) r.probe_basis = cfg["probe_basis"];
    if (cfg.contains("stimridge")) r.stimridge = cfg["stimridge"];
  } catch (const std::exception& e) {
    fail(cfg_path, ": ", e.what());
  }
  const std::string rows_path = (d / "results.csv").string();
  std::ifstream in(rows_path);
  require(static_cast<bool>(in), rows_path, ": missing");
  std::string line;
  std::getline(in, line);
  require(line == "task,method,fraction,subject,fold,metric,value", rows_path, ": not a bfm eval results table");
  for (int64_t number = 2; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::stringstream ls(line);
    for (std::string item; std::getline(ls, item, ',');) f.push_back(item);
    require(f.size() == 7, rows_path, ":", number, ": expected 7 columns, got ", f.size());
    ResultRow row;
    try {
      row.task = f[0], row.method = f[1], row.fraction = std::stod(f[2]), row.subject = f[3];
      row.fold = std::stoi(f[4]), row.metric = f[5];
      row.value = f[6] == "nan" || f[6] == "-nan" ? NAN : std::stod(f[6]);
    } catch (const std::exception&) {
      fail(rows_path, ":", number, ": not a number where one belongs");
    }
    r.rows.push_back(row);
  }
  const fs::path map_path = d / "encoding_map.csv";
  if (fs::exists(map_path)) {
    std::ifstream mf(map_path);
    std::getline(mf, line);
    std::vector<std::string> methods;
    std::stringstream hs(line);
    for (std::string item; std::getline(hs, item, ',');) methods.push_back(item);
    while (std::getline(mf, line)) {
      std::stringstream ls(line);
      std::string item;
      std::getline(ls, item, ',');  // parcel
      for (size_t m = 1; m < methods.size() && std::getline(ls, item, ','); ++m)
        r.encoding_map[methods[m]].push_back(std::stod(item));
    }
  }
  std::ifstream pf(d / "pca.csv");
  for (std::string pl; pf && std::getline(pf, pl);) r.pca_table.push_back(pl);
  std::ifstream tf(d / "probe_basis.csv");
  for (std::string tl; tf && std::getline(tf, tl);) r.probe_table.push_back(tl);
  std::ifstream sf(d / "stimridge.csv");
  for (std::string sl; sf && std::getline(sf, sl);) r.stimridge_table.push_back(sl);
  summarize(r);
  if (provenance) *provenance = cfg;
  return r;
}

EvalReport merge_reports(const std::vector<std::string>& dirs, const std::string& out_dir, nlohmann::json* provenance) {
  require(!dirs.empty(), "eval --merge: no report folder given");
  EvalReport merged;
  nlohmann::json first;
  std::set<int> parts_seen;
  std::map<std::string, std::vector<double>> enc_sum;
  std::map<std::string, double> enc_n;
  for (size_t i = 0; i < dirs.size(); ++i) {
    nlohmann::json cfg;
    EvalReport r = read_report(dirs[i], &cfg);
    if (i == 0) {
      first = cfg;
      merged.population_subjects = r.population_subjects;
      merged.trials = r.trials;
      merged.n_categories = r.n_categories;
      merged.labelled = r.labelled;
      merged.pca = r.pca;
      merged.pca_table = r.pca_table;
      merged.probe_basis = r.probe_basis;
      merged.probe_table = r.probe_table;
      merged.stimridge = r.stimridge;
      merged.stimridge_table = r.stimridge_table;
    } else {
      for (const char* key : {"corpus", "checkpoint", "tasks", "folds", "cv_unit", "fractions", "seed", "parts",
                              "labelled", "labelled_seed", "pca_components", "probe_components", "heldout_study"})
        require(cfg.value(key, nlohmann::json()) == first.value(key, nlohmann::json()), dirs[i],
                "/config.json: its ", key, " differs from ", dirs[0], "'s: parts of different evaluations");
    }
    const int part = cfg.value("part", 0);
    require(parts_seen.insert(part).second, dirs[i], ": part ", part, " is given twice");
    merged.held_out_subjects += r.held_out_subjects;
    merged.rows.insert(merged.rows.end(), r.rows.begin(), r.rows.end());
    for (const auto& n : r.notes)
      if (std::find(merged.notes.begin(), merged.notes.end(), n) == merged.notes.end()) merged.notes.push_back(n);
    for (const auto& [method, values] : r.encoding_map) {
      const double n = r.encoding_folds.count(method) ? r.encoding_folds.at(method) : 1.0;
      auto& sum = enc_sum[method];
      sum.resize(values.size(), 0.0);
      for (size_t p = 0; p < values.size(); ++p) sum[p] += values[p] * n;
      enc_n[method] += n;
    }
  }
  const int parts = first.value("parts", 1);
  if (int(parts_seen.size()) != parts) {
    std::string missing;
    for (int p = 0; p < parts; ++p)
      if (!parts_seen.count(p)) missing += (missing.empty() ? "" : ", ") + std::to_string(p);
    fail("eval --merge: ", parts, " parts expected, part(s) ", missing, " missing");
  }
  for (auto& [method, sum] : enc_sum) {
    for (auto& v : sum) v /= enc_n[method];
    merged.encoding_map[method] = sum;
    merged.encoding_folds[method] = enc_n[method];
  }
  summarize(merged);
  // Predictions: every part's CSVs concatenated, one header each.
  const fs::path pred_out = fs::path(out_dir) / "predictions";
  for (const std::string& task : prediction_files()) {
    std::ostringstream all;
    bool header = false;
    for (const auto& d : dirs) {
      std::ifstream in(fs::path(d) / "predictions" / (task + ".csv"));
      if (!in) continue;
      std::string line;
      std::getline(in, line);
      if (!header) all << line << "\n", header = true;
      while (std::getline(in, line)) all << line << "\n";
    }
    if (header) {
      fs::create_directories(pred_out);
      write_text(pred_out / (task + ".csv"), all.str());
    }
  }
  if (provenance) {
    *provenance = first;
    (*provenance)["merged_from"] = dirs;
  }
  return merged;
}

}  // namespace bfm::launch::eval

