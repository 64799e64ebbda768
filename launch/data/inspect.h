// bfm inspect's job (the command line is launch/cli/cmd_inspect.cpp):
// what a corpus holds (studies, subjects, runs, hours, TRs, parcels, splits,
// traits), read from manifest.json and the shards' tables. --verify reads every row of every row dataset run by run,
// so that every chunk passes HDF5's Fletcher32 check; a failure is reported by file and run and the exit is
// non-zero. Under mpirun the shards are split over the ranks (shard i on rank i % size) and failures gathered on
// rank 0, which prints everything.
#pragma once

#include <string>

namespace bfm::launch {

struct InspectOptions {
  std::string dir;
  bool verify = false, json = false;
};

// Prints the summary (or JSON) on rank 0; returns the exit status (non-zero when --verify found a failure). Needs HDF5.
int inspect(const InspectOptions& options);

}  // namespace bfm::launch
