// bfm pretrain: train the model (launch/trainer.h) and write a released checkpoint with its model card.
// (Corpora, MPI ranks and resumable training checkpoints come with the data path and the distributed runtime.)
#include <filesystem>
#include <sstream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "launch/commands.h"
#include "launch/run_config.h"
#include "launch/trainer.h"
#include "model/checkpoint.h"
#include "runtime/progress.h"

namespace bfm::launch {

namespace {

std::string model_card(const RunConfig& rc, const TrainResult& r) {
  std::ostringstream os;
  const auto& m = rc.model;
  os << "# bfm checkpoint\n\n"
     << "A brain transformer (MODEL_SPEC v1) pre-trained by `bfm pretrain` with objectives "
     << nlohmann::json(m.objectives()).dump() << ".\n\n"
     << "- Input: windows of " << m.window << " time points x " << m.n_parcels << " parcels, patches of "
     << m.patch_len << " time points (" << m.n_tokens() << " tokens)\n"
     << "- Encoder: " << m.n_layers << " layers, width " << m.d_model << ", " << m.n_heads << " heads\n"
     << "- Data: " << rc.data.source << " windows (data seed " << rc.data.seed << ")\n"
     << "- Training: " << rc.train.steps << " steps of batch " << rc.train.batch_size << ", AdamW lr "
     << rc.train.optimizer.lr << ", mask strategy " << model::to_string(rc.train.mask_strategy) << ", "
     << runtime::format_duration(r.seconds) << "\n";
  os << "- Held-out losses:";
  for (const auto& [name, v] : named_losses(r.first)) os << " " << name << " " << v;
  os << " at step 0;";
  for (const auto& [name, v] : named_losses(r.last)) os << " " << name << " " << v;
  os << " at the end\n\n"
     << "Load it in PyTorch with `tools/bfm_torch.py` of the bfm repository:\n\n"
     << "```python\nfrom bfm_torch import load_checkpoint, BrainModel\n"
     << "config, state = load_checkpoint(\"path/to/this/folder\")\n"
     << "model = BrainModel(config)\nmodel.load_state_dict(state)\n```\n";
  return os.str();
}

int run(const RunConfig& rc) {
  namespace fs = std::filesystem;
  train_on_gpu(rc);  // a GPU asked for and missing is an error before anything is written
  fs::create_directories(rc.train.out);
  runtime::log_line("output folder " + rc.train.out + " (metrics.jsonl, checkpoint/)");
  const TrainResult result = pretrain(rc, {true, (fs::path(rc.train.out) / "metrics.jsonl").string()});

  model::ModelConfig released = rc.model;
  released.atlas = "synthetic";
  released.train_steps = rc.train.steps;
  released.train_datasets = {"synthetic-windows"};
  model::BrainModel out_model(released);
  std::copy(result.model->params(), result.model->params() + result.model->arena_size(), out_model.params());
  const std::string checkpoint = (fs::path(rc.train.out) / "checkpoint").string();
  model::save_released_checkpoint(checkpoint, out_model, {{"README.md", model_card(rc, result)}});
  runtime::log_line("released checkpoint: " + checkpoint + " (model.safetensors, config.json, README.md)");
  return 0;
}

}  // namespace

Command add_pretrain_command(CLI::App& app) {
  struct Options {
    std::string config, out;
    std::vector<std::string> overrides;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("pretrain", "Pre-train the model (for now on synthetic windows, one process)");
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
