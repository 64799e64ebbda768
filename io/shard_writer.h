// Writes shard files (docs/FORMAT.md), in two modes:
//  - ShardWriter: one process writes one shard, run by run (the simple mode: each rank its own shard file);
//  - write_shard_collective: all ranks of a communicator write their runs into one shared shard through MPI-IO.
// Either way the file is built under `path + ".tmp"` and renamed to `path` only when whole, so an interrupted
// conversion never leaves a file that looks like a finished shard.
#pragma once

#ifdef BFM_WITH_HDF5

#include <memory>
#include <string>
#include <vector>

#ifdef BFM_WITH_MPI
#include <mpi.h>
#endif

#include "io/shard.h"

namespace bfm::io {

class ShardWriter {
 public:
  // Creates `path + ".tmp"` (replacing a stale one). Throws bfm::Error naming the path.
  ShardWriter(const std::string& path, const ShardHeader& header);
  // Without commit(), the temporary file is removed.
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Optional: a subject's traits. A run's subject that was never added gets a row with every trait missing.
  void add_subject(const Subject& subject);
  // Appends the run's rows; `run.meta.offset` is ignored (the writer places it). Errors name the run.
  void add_run(const RunView& run);
  // Writes the tables, closes, fsyncs and renames to the final path. At least one run must have been added.
  void commit();

  struct File;  // the open HDF5 file and its datasets (shard_writer.cpp)

 private:
  std::unique_ptr<File> file_;
  std::vector<Subject> subjects_;
  std::vector<Run> runs_;
  int64_t rows_ = 0;
  bool committed_ = false;
};

#ifdef BFM_WITH_MPI
// Collective over `comm` (every rank calls it, with the same path and header): each rank passes its own runs and
// subjects; the file holds rank 0's runs first, then rank 1's, and so on. Sizes and metadata are exchanged first
// (MPI_Allgather) so that every rank creates the same datasets; then each rank writes its rows of the time series
// as one hyperslab with collective MPI-IO transfer (HDF5 requires it for a Fletcher32-filtered dataset), and rank 0
// writes the small tables. A subject passed by several ranks keeps the first (lowest rank's) traits. When any rank's
// input is invalid, every rank throws the same bfm::Error (naming that rank) before anything is written.
void write_shard_collective(MPI_Comm comm, const std::string& path, const ShardHeader& header,
                            const std::vector<Subject>& subjects, const std::vector<RunView>& runs);
#endif

}  // namespace bfm::io

#endif  // BFM_WITH_HDF5
