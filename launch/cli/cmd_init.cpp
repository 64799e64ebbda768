// bfm init --config FILE --out DIR: a released checkpoint with freshly initialised parameters (GPT-2/MAE init).
#include <CLI/CLI.hpp>

#include "launch/cli/commands.h"
#include "launch/train/run_config.h"
#include "model/released_checkpoint.h"
#include "runtime/progress.h"

namespace bfm::launch {

Command add_init_command(CLI::App& app) {
  struct Options {
    std::string config, out;
    uint64_t seed = 0;
    std::vector<std::string> overrides;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("init", "Write a randomly initialised released checkpoint (model.safetensors + config.json)");
  cmd->add_option("--config", opt->config, "Run config (TOML); its [model] section is used")->check(CLI::ExistingFile);
  cmd->add_option("--out", opt->out, "Checkpoint folder to create")->required();
  cmd->add_option("--seed", opt->seed, "Initialisation seed")->capture_default_str();
  cmd->add_option("--set", opt->overrides, "Override a config key, e.g. --set model.d_model=256 (repeatable)");
  return [opt] {
    const RunConfig rc = load_run_config(opt->config, opt->overrides, /*model_only=*/true);
    const std::unique_ptr<model::BrainModel> model = model::make_model(rc.model, model::Placement::cpu());
    model->initialize(opt->seed);
    model::save_released_checkpoint(opt->out, *model);
    runtime::log_line("wrote " + opt->out + " (" + std::to_string(model->layout().params().size()) + " tensors, " +
                      std::to_string(model->arena_size()) + " floats)");
    return 0;
  };
}

}  // namespace bfm::launch
