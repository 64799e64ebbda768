// bfm: pre-train brain foundation models on fMRI. One binary, one subcommand per job.
#include <cstdlib>
#include <filesystem>
#include <new>
#include <iostream>
#include <map>
#include <string>

#include <CLI/CLI.hpp>

#include "launch/cli/commands.h"
#include "runtime/blas_core.h"
#include "base/error.h"
#include "runtime/world.h"

int main(int argc, char** argv) {
  bfm::runtime::select_blas_core(argv);
  CLI::App app{"bfm " BFM_VERSION ": pre-train brain foundation models on fMRI, fine-tune them on new subjects"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "bfm " BFM_VERSION);
  std::map<std::string, bfm::launch::Command> commands;
  commands["init"] = bfm::launch::add_init_command(app);
  commands["forward"] = bfm::launch::add_forward_command(app);
  commands["pretrain"] = bfm::launch::add_pretrain_command(app);
  commands["config"] = bfm::launch::add_config_command(app);
  commands["info"] = bfm::launch::add_info_command(app);
  commands["synth"] = bfm::launch::add_synth_command(app);
  commands["convert"] = bfm::launch::add_convert_command(app);
  commands["inspect"] = bfm::launch::add_inspect_command(app);
  commands["plot"] = bfm::launch::add_plot_command(app);
  commands["export"] = bfm::launch::add_export_command(app);
  commands["finetune"] = bfm::launch::add_finetune_command(app);
  commands["eval"] = bfm::launch::add_eval_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; a bad command line (a missing file, an unknown option) is bad input: exit 2.
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    for (const auto* sub : app.get_subcommands()) return commands.at(sub->get_name())();
  } catch (const bfm::Error& e) {
    std::cerr << "bfm: error: " << e.what() << std::endl;
    bfm::runtime::abort_world(2);
    return 2;
  } catch (const std::filesystem::filesystem_error& e) {
    // A path the command cannot create or read (an output folder that is a file, a read-only disk): its names.
    std::cerr << "bfm: error: " << e.path1().string() << ": " << e.code().message()
              << (e.path2().empty() ? "" : " (with " + e.path2().string() + ")") << std::endl;
    bfm::runtime::abort_world(2);
    return 2;
  } catch (const std::bad_alloc&) {
    // Sizes from the input (a model or a scan far larger than memory) that passed every check.
    std::cerr << "bfm: error: out of memory: the model, batch or data asked for more memory than this machine has "
                 "(check the sizes in the config or the input files)" << std::endl;
    bfm::runtime::abort_world(2);
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "bfm: internal error: " << e.what() << std::endl;
    bfm::runtime::abort_world(3);
    return 3;
  }
  return 0;
}
