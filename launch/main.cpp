// bfm: pre-train brain foundation models on fMRI. One binary, one subcommand per job.
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <new>
#include <iostream>
#include <map>
#include <string>
#include <thread>

#include <unistd.h>

#include <CLI/CLI.hpp>

#include "launch/cli/commands.h"
#include "runtime/blas_core.h"
#include "runtime/comm.h"
#include "base/error.h"
#include "runtime/world.h"

namespace {

// One line on stderr in one write(2): the lines of ranks that print at the same moment never interleave (a write to
// a pipe of up to PIPE_BUF bytes is atomic, and mpirun forwards what it reads).
void print_line(const std::string& text) {
  const std::string line = text + "\n";
  std::cerr.flush();
  for (size_t at = 0; at < line.size();) {
    const ssize_t n = ::write(2, line.data() + at, line.size() - at);
    if (n <= 0) break;
    at += static_cast<size_t>(n);
  }
}

// One error per job: under a launcher every rank that fails would print the same line (a bad config fails on all
// of them), interleaved. Rank 0 prints at once and ends the job (abort_world); any other rank waits a few seconds
// first, so that when rank 0 has the same error the job is gone before it prints, and when the error is its own
// (its shard, its GPU) it is printed, naming the rank.
int report_error(const std::string& text, int exit_code) {
  using namespace std::chrono_literals;
  const auto [rank, size] = bfm::runtime::rank_in_world();
  // Before MPI starts the errors are the command line's and the config's, the same on every rank: rank 0's exit
  // ends the job (mpirun and srun kill the rest), so the others wait long enough for that even on a loaded machine.
  if (size > 1 && rank != 0) std::this_thread::sleep_for(bfm::runtime::world_started() ? 5s : 15s);
  print_line("bfm: " + (size > 1 && rank != 0 ? "rank " + std::to_string(rank) + ": " : std::string()) + text);
  bfm::runtime::abort_world(exit_code);
  // Everything the command made is closed by now (the exception unwound it). Skip the libraries' exit handlers: after
  // a failed write HDF5's would loop on a file it cannot flush ("infinite loop closing library"), and MPI has nothing
  // left to finalize that matters in a world of one.
  std::cout.flush();
  std::cerr.flush();
  std::_Exit(exit_code);
}

}  // namespace

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
  commands["embed"] = bfm::launch::add_embed_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; a bad command line (a missing file, an unknown option) is bad input: exit 2.
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    for (const auto* sub : app.get_subcommands()) return commands.at(sub->get_name())();
  } catch (const bfm::runtime::CollectiveTimeout& e) {
    // Every rank that waits reports what it waited for (the reports differ); then, after the others have had the
    // time to report too, the job ends with the status that asks for a requeue.
    print_line(std::string("bfm: error: ") + e.what());
    std::this_thread::sleep_for(std::chrono::seconds(3));
    bfm::runtime::abort_world(bfm::runtime::kExitCollectiveTimeout);
    return bfm::runtime::kExitCollectiveTimeout;
  } catch (const bfm::Error& e) {
    return report_error(std::string("error: ") + e.what(), 2);
  } catch (const std::filesystem::filesystem_error& e) {
    // A path the command cannot create or read (an output folder that is a file, a read-only disk): its names.
    return report_error("error: " + e.path1().string() + ": " + e.code().message() +
                            (e.path2().empty() ? "" : " (with " + e.path2().string() + ")"),
                        2);
  } catch (const std::bad_alloc&) {
    // Sizes from the input (a model or a scan far larger than memory) that passed every check.
    return report_error("error: out of memory: the model, batch or data asked for more memory than this machine has "
                        "(check the sizes in the config or the input files)",
                        2);
  } catch (const std::exception& e) {
    return report_error(std::string("internal error: ") + e.what(), 3);
  }
  return 0;
}
