// bfm export RUN_DIR [--checkpoint FILE] [--out DIR]: a released checkpoint (MODEL_SPEC "Released checkpoint") from
// a training checkpoint of `bfm pretrain` (the newest one by default), with a model card (README.md: the model, what
// it was trained on, for how long, the last losses, the loss plot, how to load it in PyTorch) and the plot beside it.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "launch/cli/commands.h"
#include "launch/plot/run_plots.h"
#include "launch/train/model_card.h"
#include "model/released_checkpoint.h"
#include "base/error.h"
#include "io/json_file.h"
#include "runtime/optimizer.h"
#include "runtime/progress.h"
#ifdef BFM_WITH_HDF5
#include "runtime/train_checkpoint.h"
#endif

namespace bfm::launch {

namespace {
namespace fs = std::filesystem;

#ifdef BFM_WITH_HDF5
int run_export(const std::string& run_dir, std::string checkpoint, std::string out) {
  const fs::path ckpt_dir = fs::path(run_dir) / "checkpoints";
  if (checkpoint.empty()) {
    checkpoint = runtime::latest_train_checkpoint(ckpt_dir.string());
    require(!checkpoint.empty(), run_dir, ": no training checkpoint (", ckpt_dir.string(),
            "/latest is missing): has `bfm pretrain --out ", run_dir, "` run?");
  }
  if (out.empty()) out = (fs::path(run_dir) / "export").string();

  // The model's config: written by bfm pretrain beside its checkpoints, and checked against the checkpoint's own.
  const fs::path config_path = ckpt_dir / "config.json";
  const nlohmann::json run_json =
      io::read_json_file(config_path.string(), "missing (written by bfm pretrain at the start of a run)");
  nlohmann::json model_json = run_json;
  for (const char* k : {"batch_size", "seed", "data"}) model_json.erase(k);
  const model::ModelConfig config = model::from_checkpoint_json(model_json, config_path.string());
  const std::unique_ptr<model::BrainModel> model = model::make_model(config, model::Placement::cpu());
  const runtime::TrainState state = runtime::read_train_checkpoint(checkpoint, model->checkpoint_tensors());
  model->checkpoint_loaded();
  require(nlohmann::json::parse(state.config_json) == run_json, checkpoint, ": written by another run than ",
          config_path.string(), " describes");

  model::ModelConfig released = config;
  released.train_steps = state.step;
  CardInputs card;
  card.config = released;
  card.steps = state.step;
  card.batch_size = run_json.value("batch_size", 0);
  card.source_checkpoint = checkpoint;
  card.metrics_jsonl = state.metrics_jsonl;
  card.ranks = state.world_size;
  card.data = run_json.value("data", "");
  std::map<std::string, std::string> files = {{"README.md", ""}};
  const std::string plot = render_loss_plot(state.metrics_jsonl);  // PNG bytes, "" when there is nothing to plot
  if (!plot.empty()) {
    files["loss.png"] = plot;
    card.plot_file = "loss.png";
  }
  files["README.md"] = model_card(card);
  const std::unique_ptr<model::BrainModel> out_model = model::make_model(released, model::Placement::cpu());
  out_model->load_params(model->params_copy().data());
  model::save_released_checkpoint(out, *out_model, files);
  runtime::log_line("released checkpoint: " + out + " (model.safetensors, config.json, README.md" +
                    (plot.empty() ? "" : ", loss.png") + ") from " + checkpoint + ", step " +
                    std::to_string(state.step));
  return 0;
}
#endif

}  // namespace

Command add_export_command(CLI::App& app) {
  struct Options {
    std::string run, checkpoint, out;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "export", "A released checkpoint (safetensors + config.json + model card) from a training checkpoint");
  cmd->add_option("run", opt->run, "The run's output folder (bfm pretrain --out)")->required();
  cmd->add_option("--checkpoint", opt->checkpoint, "A training checkpoint file (default: the run's newest)");
  cmd->add_option("--out", opt->out, "Folder to write (default: RUN/export)");
  return [opt]() -> int {
#ifdef BFM_WITH_HDF5
    return run_export(opt->run, opt->checkpoint, opt->out);
#else
    fail("bfm export reads HDF5 training checkpoints, and this build has HDF5 off (BFM_WITH_HDF5=OFF)");
#endif
  };
}

}  // namespace bfm::launch
