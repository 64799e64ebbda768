// bfm pretrain: train the model (launch/train/pretrain.h) and write a released checkpoint with its model card.
// Under mpirun every rank trains its part of each global batch; rank 0 writes the metrics and the released checkpoint.
// Exit status: 0 done, 75 stopped by SIGUSR1/SIGTERM after writing a training checkpoint (run again to continue),
// 4 too many non-finite steps in a row, 2 bad input, 76 a collective timed out (a rank lost: run again to resume).
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <sstream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "launch/cli/commands.h"
#include "launch/train/folder_lock.h"
#include "launch/plot/run_plots.h"
#include "launch/train/model_card.h"
#include "launch/train/run_config.h"
#include "launch/train/pretrain.h"
#include "model/released_checkpoint.h"
#include "runtime/progress.h"
#include "runtime/watchdog.h"
#include "runtime/world.h"

namespace bfm::launch {

namespace {

// OUT/status.json (rank 0, replaced atomically): what became of the run, for wrappers and monitors that cannot see
// the ranks' exit status. Open MPI's mpirun, itself sent SIGTERM or SIGINT, exits 1 whatever its ranks return; the
// ranks still checkpoint and stop with 75, and this file says so ({"state": "stopped", "exit_status": 75, ...}).
// States: "running" (with the pid; a dead pid means the run failed: its error is on stderr), "stopped", "diverged",
// "finished".
void write_status(const std::string& out, const std::string& state, int exit_status, int64_t step) {
  namespace fs = std::filesystem;
  nlohmann::json j{{"state", state}, {"step", step}, {"pid", static_cast<int64_t>(::getpid())}};
  if (state != "running") j["exit_status"] = exit_status;
  const fs::path path = fs::path(out) / "status.json", tmp = fs::path(out) / ".status.json.tmp";
  {
    std::ofstream f(tmp);
    f << j.dump() << "\n";
    require(f.good(), tmp.string(), ": cannot write it");
  }
  fs::rename(tmp, path);
}

int run(const RunConfig& rc) {
  namespace fs = std::filesystem;
  run_placement(rc);  // a GPU asked for and missing is an error before anything is written
  require(!fs::exists(rc.train.out) || fs::is_directory(rc.train.out), rc.source, ": train.out = \"", rc.train.out,
          "\" exists and is not a folder");
  const bool lead = runtime::world().rank == 0;
  std::unique_ptr<FolderLock> lock;  // the output folder is this run's while it runs (a second run is refused)
  if (lead) {
    lock = std::make_unique<FolderLock>(rc.train.out);
    fs::create_directories(fs::path(rc.train.out) / "checkpoints");
    runtime::log_line("output folder " + rc.train.out + " (metrics.jsonl, training checkpoints in checkpoints/, the released model in release/)");
    write_status(rc.train.out, "running", 0, 0);
  }
  TrainOptions options;
  options.metrics_path = (fs::path(rc.train.out) / "metrics.jsonl").string();
  options.checkpoint_dir = (fs::path(rc.train.out) / "checkpoints").string();
  const TrainResult result = pretrain(rc, options);
  if (result.stopped_by_signal) {
    if (lead)
      runtime::log_line("stopped by a signal after step " + std::to_string(result.steps_done) + "; checkpoint " +
                        result.last_checkpoint + "; run the same command again to continue (exit status " +
                        std::to_string(kExitStoppedBySignal) + ")");
    if (lead) write_status(rc.train.out, "stopped", kExitStoppedBySignal, result.steps_done);
    return kExitStoppedBySignal;
  }
  if (result.diverged) {
    if (lead) runtime::log_line("diverged: see the non-finite steps above (exit status " + std::to_string(kExitDiverged) + ")");
    if (lead) write_status(rc.train.out, "diverged", kExitDiverged, result.steps_done);
    return kExitDiverged;
  }
  if (!lead) {
    runtime::fault_stop_point("finished");
    return 0;
  }

  model::ModelConfig released = rc.model;
  released.atlas = result.data_atlas;
  released.tr_seconds = result.data_tr;
  released.data_provenance = result.data_provenance;
  released.train_steps = result.steps_done;
  // What the model learned from: the corpus' studies it trained on (those of data.exclude_studies left out; a study's
  // own name where its runs have one, else the corpus folder's), and how many subjects.
  released.train_datasets.clear();
  if (rc.data.source != "corpus") released.train_datasets = {"synthetic-windows"};
  for (const std::string& study : result.data_studies)
    released.train_datasets.push_back(study.empty() ? fs::path(rc.data.corpus).filename().string() : study);
  released.train_subjects = result.data_subjects;
  // The trained weights under the released config (its provenance fields), on the host.
  const std::unique_ptr<model::BrainModel> out_model = model::make_model(released, model::Placement::cpu());
  out_model->load_params(result.model->params_copy().data());
  const std::string checkpoint = (fs::path(rc.train.out) / "release").string();
  CardInputs card;
  card.config = released;
  card.steps = result.steps_done;
  card.batch_size = rc.train.batch_size;
  card.ranks = runtime::world().size;
  card.data = result.data_description;
  card.seconds = result.seconds;
  std::ifstream metrics(fs::path(rc.train.out) / "metrics.jsonl");
  card.metrics_jsonl.assign(std::istreambuf_iterator<char>(metrics), std::istreambuf_iterator<char>());
  std::map<std::string, std::string> files;
  if (std::string plot = render_loss_plot(card.metrics_jsonl); !plot.empty()) {
    files["loss.png"] = std::move(plot);
    card.plot_file = "loss.png";
  }
  files["README.md"] = model_card(card);
  model::save_released_checkpoint(checkpoint, *out_model, files);
  runtime::log_line("released checkpoint: " + checkpoint + " (model.safetensors, config.json, README.md" +
                    (card.plot_file.empty() ? "" : ", loss.png") + ")");
  write_status(rc.train.out, "finished", 0, result.steps_done);
  return 0;
}

}  // namespace

Command add_pretrain_command(CLI::App& app) {
  struct Options {
    std::string config, out;
    std::vector<std::string> overrides;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("pretrain", "Pre-train the model (synthetic windows or a corpus; over MPI ranks under mpirun; resumes by itself)");
  cmd->add_option("--config", opt->config, "Run config (TOML); see `bfm config --defaults`")
      ->check(CLI::ExistingFile);
  cmd->add_option("--set", opt->overrides, "Override a config key, e.g. --set train.steps=100 (repeatable)");
  cmd->add_option("--out", opt->out, "Output folder (overrides train.out)");
  return [opt] {
    std::vector<std::string> overrides = opt->overrides;
    if (!opt->out.empty()) overrides.push_back("train.out=\"" + opt->out + "\"");
    return run(load_run_config(opt->config, overrides));
  };
}

}  // namespace bfm::launch
