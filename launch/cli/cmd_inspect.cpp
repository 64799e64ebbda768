// bfm inspect DIR [--verify] [--json]: what a corpus holds, and with --verify whether every chunk reads back.
// The job: launch/data/inspect.h.
#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "base/error.h"
#include "launch/cli/commands.h"
#include "launch/data/inspect.h"

namespace bfm::launch {

Command add_inspect_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "Describe a corpus; --verify reads every chunk and checks its checksum");
#ifdef BFM_WITH_HDF5
  auto o = std::make_shared<InspectOptions>();
  cmd->add_option("dir", o->dir, "Corpus folder (manifest.json and shard-*.h5)")->required();
  cmd->add_flag("--verify", o->verify, "Read every chunk of every dataset; report checksum failures by file and run");
  cmd->add_flag("--json", o->json, "Print the summary as JSON on stdout");
  return [o]() -> int { return inspect(*o); };
#else
  (void)cmd;
  return []() -> int { fail("bfm inspect reads HDF5, and this build has HDF5 off (BFM_WITH_HDF5=OFF)"); };
#endif
}

}  // namespace bfm::launch
