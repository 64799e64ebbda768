// bfm eval --checkpoint DIR --corpus DIR --out DIR: downstream evaluation of a released checkpoint on the corpus'
// held-out subjects (launch/eval/evaluate.h): decoding, retrieval, encoding, diagnosis and traits; per-subject ridge,
// population ridge, PCA and linear probes, full fine-tuning and the same architecture from scratch, side by side on the
// same cross-validation splits, with few-shot curves, the label-scarce curve over K labelled pre-training subjects and
// paired comparisons. Writes results.csv, summary.csv, summary.md, PNG plots, the
// predictions and config.json into --out, and prints the headline table. Runs over MPI ranks (mpirun -np N).
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <limits>
#include <memory>
#include <sstream>

#include <CLI/CLI.hpp>

#include "launch/cli/commands.h"
#include "base/error.h"
#include "launch/eval/tasks.h"
#ifdef BFM_WITH_HDF5
#include <nlohmann/json.hpp>

#include "launch/data/provenance.h"
#include "launch/eval/data.h"
#include "launch/eval/report.h"
#include "launch/eval/evaluate.h"
#include "launch/eval/models.h"
#include "model/released_checkpoint.h"
#include "runtime/comm.h"
#include "runtime/progress.h"
#include "model/placement.h"
#endif

namespace bfm::launch {

namespace {
struct EvalCli {
  std::string checkpoint, corpus, out, tasks;  // tasks: every task of the registry unless given
  std::string fractions = "0.01,0.02,0.05,0.1,0.25,0.5,1";
  std::vector<std::string> finetuned, scratch, merge;
  std::string part;
  int folds = 5;
  int64_t held_out = 0, population = 256, finetune_steps = 0, finetune_head_steps = 0;
  uint64_t seed = 0;
  bool no_predictions = false;
  std::string device = "auto";
  std::string cv = "stimulus";
  std::string labelled = "all";
  int64_t labelled_seed = -1;  // -1: --seed
  int pca_components = 0;
  int probe_components = 0;
  std::string heldout_study;
};

// --labelled-subjects: K values (integers >= 0, or "all" for -1), ascending, "all" last, each once.
[[maybe_unused]] std::vector<int> parse_labelled(const std::string& list) {
  std::vector<int> out;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');) {
    if (item.empty()) continue;
    int k = -1;
    if (item != "all") {
      size_t used = 0;
      try {
        k = std::stoi(item, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      require(used == item.size() && k >= 0, "--labelled-subjects: '", item, "' is not a count >= 0 or 'all'");
    }
    if (std::find(out.begin(), out.end(), k) == out.end()) out.push_back(k);
  }
  require(!out.empty(), "--labelled-subjects: empty");
  const auto order = [](int k) { return k < 0 ? std::numeric_limits<int>::max() : k; };
  std::sort(out.begin(), out.end(), [&](int a, int b) { return order(a) < order(b); });
  return out;
}

// The fractions summary.md and the printed table lead with: 10 % and 100 % where evaluated, else the largest.
[[maybe_unused]] std::vector<double> headline_fractions(const std::vector<double>& fractions) {
  std::vector<double> out;
  for (double f : {0.1, 1.0})
    if (std::find(fractions.begin(), fractions.end(), f) != fractions.end()) out.push_back(f);
  if (out.empty()) out.push_back(*std::max_element(fractions.begin(), fractions.end()));
  return out;
}

[[maybe_unused]] std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}
}  // namespace

Command add_eval_command(CLI::App& app) {
  auto opt = std::make_shared<EvalCli>();
  for (const auto& t : eval::task_names()) opt->tasks += (opt->tasks.empty() ? "" : ",") + t;
  CLI::App* cmd = app.add_subcommand(
      "eval", "Evaluate a checkpoint downstream on a corpus' held-out subjects against per-subject ridge (MPI ranks)");
  cmd->add_option("--checkpoint", opt->checkpoint, "Pre-trained released checkpoint folder (required unless --merge)");
  cmd->add_option("--corpus", opt->corpus, "Corpus folder whose manifest split holds out subjects (required unless --merge)");
  cmd->add_option("--out", opt->out, "Report folder")->required();
  cmd->add_option("--tasks", opt->tasks, "Comma-separated tasks")->capture_default_str();
  cmd->add_option("--fractions", opt->fractions, "Fractions of each new subject's training data (few-shot curve)")
      ->capture_default_str();
  cmd->add_option("--folds", opt->folds, "Cross-validation folds within each subject")->capture_default_str();
  cmd->add_option("--cv", opt->cv, "What a fold keeps whole: stimulus | run (subjects with several task runs)")
      ->capture_default_str()
      ->check(CLI::IsMember({"stimulus", "run"}));
  cmd->add_option("--held-out", opt->held_out, "At most this many held-out subjects (0: all)")->capture_default_str();
  cmd->add_option("--population", opt->population,
                  "At most this many pre-training subjects for the population methods, read into memory (0: all)")
      ->capture_default_str();
  cmd->add_option("--finetuned", opt->finetuned, "TASK=DIR: a bfm finetune checkpoint for a task (repeatable)");
  cmd->add_option("--scratch", opt->scratch, "TASK=DIR: a bfm finetune --scratch checkpoint for a task (repeatable)");
  cmd->add_option("--finetune-steps", opt->finetune_steps,
                  "> 0: fine-tune (and train from scratch) for category and embedding here, this many steps each, "
                  "writing the checkpoints into OUT/finetuned-TASK and OUT/scratch-TASK")
      ->capture_default_str();
  cmd->add_option("--finetune-head-steps", opt->finetune_head_steps,
                  "Of the --finetune-steps, the first ones train the task head alone (encoder frozen; the same for "
                  "scratch): linear probe, then fine-tune")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", opt->seed, "Seed of the folds and the bootstrap")->capture_default_str();
  cmd->add_option("--labelled-subjects", opt->labelled,
                  "The label-scarce protocol: K[,K...] (integers, or 'all'). For each K the population methods "
                  "(ridge_pop, pca_pop, probe_pop, oracle_pop, finetune, scratch; named METHOD@K) use the labels of "
                  "only K pre-training subjects drawn by --labelled-seed, while the PCA basis and pre-training used "
                  "every subject unlabelled; K = 0: they are their per-subject forms (finetune, scratch skipped). "
                  "The report gives the curve over K, e.g. 0,2,8,all")
      ->capture_default_str();
  cmd->add_option("--labelled-seed", opt->labelled_seed,
                  "Seed of the draw of the labelled subjects (default: --seed); a smaller K's are among a larger one's");
  cmd->add_option("--pca-components", opt->pca_components,
                  "Components of the PCA baseline (pca, pca_pop), fitted on the pre-training subjects' unlabelled time "
                  "series: 0 takes the fewest explaining 90% of their variance, at most the model's d_model")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--probe-components", opt->probe_components,
                  "The probe's features: every token of the window (time patch x parcel) reduced to this many principal "
                  "components of the encoder's token space, fitted on pre-training subjects' windows without labels; "
                  "0 chooses automatically (docs/EVALUATION.md)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--heldout-study", opt->heldout_study,
                  "Leave one study out: the subjects of this study (the runs' study name, any split) are the new "
                  "subjects, and the population methods learn from the other studies' training subjects only; "
                  "pre-train with data.exclude_studies = [\"NAME\"] so that the study is new to the model too");
  cmd->add_flag("--no-predictions", opt->no_predictions, "Do not write OUT/predictions/*.csv");
  cmd->add_option("--device", opt->device,
                  "Encoder features and fine-tuning: auto (a GPU where there is one) | cpu | cuda (one GPU per rank)")
      ->capture_default_str();
  cmd->add_option("--part", opt->part,
                  "I/N: one task of a job array over held-out subjects (subjects i % N == I; part 0 also runs the "
                  "subject tasks); join the N report folders with --merge");
  cmd->add_option("--merge", opt->merge, "Report folders of the N parts of a job array: write their joined report to --out")
      ->expected(1, -1);
  return [opt]() -> int {
#ifndef BFM_WITH_HDF5
    fail("bfm eval reads a corpus and needs HDF5: this build has none (BFM_WITH_HDF5=OFF)");
#else
    namespace fs = std::filesystem;
    if (!opt->merge.empty()) {
      nlohmann::json provenance;
      const eval::EvalReport report = eval::merge_reports(opt->merge, opt->out, &provenance);
      eval::EvalOptions options;
      options.tasks = provenance.value("tasks", options.tasks);
      options.folds = provenance.value("folds", options.folds);
      options.cv_unit = provenance.value("cv_unit", options.cv_unit);
      options.fractions = provenance.value("fractions", options.fractions);
      options.seed = provenance.value("seed", options.seed);
      options.labelled_seed = provenance.value("labelled_seed", options.labelled_seed);
      options.pca_components = provenance.value("pca_components", options.pca_components);
      options.probe_components = provenance.value("probe_components", options.probe_components);
      const std::vector<double> headline = headline_fractions(options.fractions);
      const std::string table = eval::write_report(opt->out, report, options, provenance, headline);
      std::cout << "bfm eval --merge: " << opt->merge.size() << " parts, " << report.held_out_subjects
                << " held-out subjects\n\n" << table << "\nreport: " << (fs::path(opt->out) / "summary.md").string()
                << "\n";
      return 0;
    }
    require(!opt->checkpoint.empty() && !opt->corpus.empty(), "bfm eval: --checkpoint and --corpus are required");
    // Options checked before anything is read or fine-tuned.
    require(opt->folds >= 2, "--folds ", opt->folds, ": at least 2");
    int part = 0, parts = 1;
    if (!opt->part.empty()) {
      const auto slash = opt->part.find('/');
      try {
        require(slash != std::string::npos, "");
        part = std::stoi(opt->part.substr(0, slash));
        parts = std::stoi(opt->part.substr(slash + 1));
      } catch (const std::exception&) {
        fail("--part ", opt->part, ": expected I/N, e.g. 3/8");
      }
      require(parts >= 1 && part >= 0 && part < parts, "--part ", opt->part, ": I must be in 0..N-1 and N >= 1");
    }
    auto comm = runtime::make_communicator("auto", false);
    const bool lead = comm->rank() == 0;
    const std::unique_ptr<model::BrainModel> pretrained = model::load_released_checkpoint(opt->checkpoint);
    eval::EvalOptions options;
    options.tasks = split_list(opt->tasks);
    for (const auto& t : options.tasks) require(eval::is_task(t), "--tasks: unknown task '", t, "'");
    options.fractions.clear();
    for (const auto& f : split_list(opt->fractions)) {
      try {
        options.fractions.push_back(std::stod(f));
      } catch (const std::exception&) {
        fail("--fractions: '", f, "' is not a number");
      }
    }
    require(!options.fractions.empty(), "--fractions: empty");
    options.folds = opt->folds;
    options.cv_unit = opt->cv;
    options.seed = opt->seed;
    options.labelled = parse_labelled(opt->labelled);
    options.pca_components = opt->pca_components;
    options.probe_components = opt->probe_components;
    options.labelled_seed = opt->labelled_seed >= 0 ? uint64_t(opt->labelled_seed) : opt->seed;
    options.part = part;
    options.parts = parts;
    require(opt->device == "auto" || opt->device == "cpu" || opt->device == "cuda", "--device ", opt->device,
            ": expected auto, cpu or cuda");
    options.device = opt->device;
    if (!opt->no_predictions) options.predictions_dir = (fs::path(opt->out) / "predictions").string();
    eval::EvalDataOptions d;
    d.window = pretrained->config().window;
    d.max_held_out = opt->held_out;
    d.max_population = opt->population;
    d.heldout_study = opt->heldout_study;
    const std::vector<std::string>& seen = pretrained->config().train_datasets;
    if (lead && !opt->heldout_study.empty() &&
        std::find(seen.begin(), seen.end(), opt->heldout_study) != seen.end())
      runtime::log_line("warning: --heldout-study " + opt->heldout_study + ": " + opt->checkpoint +
                        " was pre-trained on that study (its config.json train_datasets names it), so its subjects "
                        "are not new to the model; pre-train with data.exclude_studies = [\"" + opt->heldout_study +
                        "\"] for a leave-one-study-out evaluation");
    // The corpus must be in the checkpoint's atlas and parcel order (refused otherwise); other steps are warned about.
    for (const std::string& warning : check_provenance(pretrained->config().data_provenance, opt->checkpoint,
                                                       corpus_provenance(opt->corpus), opt->corpus))
      if (lead) runtime::log_line("warning: " + warning);
    if (lead) runtime::log_line("eval: reading " + opt->corpus);
    const eval::EvalData data = eval::load_eval_data(opt->corpus, d);
    require(pretrained->config().n_parcels == data.n_parcels, opt->checkpoint, ": takes ",
            pretrained->config().n_parcels, " parcels, but the corpus ", opt->corpus, " has ", data.n_parcels,
            " (a checkpoint of another atlas?)");

    eval::ModelSources sources;
    sources.checkpoint = opt->checkpoint;
    sources.finetuned = opt->finetuned;
    sources.scratch = opt->scratch;
    sources.finetune_steps = opt->finetune_steps;
    sources.finetune_head_steps = opt->finetune_head_steps;
    sources.out = opt->out;
    sources.device = opt->device;
    sources.seed = opt->seed;
    const eval::ModelSet set = eval::gather_models(*pretrained, data, options, sources, *comm);
    const eval::EvalModels& models = set.models;
    nlohmann::json provenance = set.provenance;
    if (!opt->heldout_study.empty()) provenance["heldout_study"] = opt->heldout_study;
    const eval::EvalReport report = eval::evaluate(data, models, options, *comm);
    if (lead) {
      const std::vector<double> headline = headline_fractions(options.fractions);
      const std::string table = eval::write_report(opt->out, report, options, provenance, headline);
      char pct[32];
      std::snprintf(pct, sizeof pct, "%g%%", headline[0] * 100);
      std::cout << "\nbfm eval: " << report.held_out_subjects << " held-out subjects, " << pct
                << " of each new subject's training data (mean ± sd over subjects x folds):\n\n"
                << table << "\nreport: " << (fs::path(opt->out) / "summary.md").string() << "\n";
      for (const auto& n : report.notes) std::cout << "note: " << n << "\n";
    }
    comm->barrier();
    return 0;
#endif
  };
}

}  // namespace bfm::launch
