// bfm config: print the built-in defaults (a starting point for a run's TOML) or check a config file.
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "launch/cli/commands.h"
#include "launch/train/run_config.h"
#include "model/masking.h"

namespace bfm::launch {

Command add_config_command(CLI::App& app) {
  struct Options {
    bool defaults = false;
    std::string config;
    std::vector<std::string> overrides;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("config", "Print the default run config, or check and print a resolved one");
  cmd->add_flag("--defaults", opt->defaults, "Print the built-in defaults as TOML");
  cmd->add_option("--config", opt->config, "Run config (TOML) to check")->check(CLI::ExistingFile);
  cmd->add_option("--set", opt->overrides, "Override a config key (repeatable)");
  return [opt] {
    if (opt->defaults) {
      std::cout << default_config_toml();
      return 0;
    }
    const RunConfig rc = load_run_config(opt->config, opt->overrides);
    nlohmann::json j = model::to_checkpoint_json(rc.model);
    j["train"] = {{"steps", rc.train.steps},
                  {"batch_size", rc.train.batch_size},
                  {"lr", rc.train.optimizer.lr},
                  {"mask_strategy", model::to_string(rc.train.mask_strategy)},
                  {"out", rc.train.out}};
    std::cout << j.dump(2) << std::endl;
    return 0;
  };
}

}  // namespace bfm::launch
