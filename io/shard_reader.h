// Reads one shard file (docs/FORMAT.md): checks its format and version on open, lists its runs and subjects, and
// reads windows (run, start, T) of a run's parcel time series as float32 [T, P], whatever the storage (float32 or
// float16). A chunk whose Fletcher32 checksum fails is reported as an error naming the file and the run.
// Not thread-safe (neither is Debian's parallel HDF5): one reader per thread, or one reading thread.
#pragma once

#ifdef BFM_WITH_HDF5

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#ifdef BFM_WITH_MPI
#include <mpi.h>
#endif

#include "io/shard.h"

namespace bfm::io {

class ShardReader {
 public:
  // Opens with the default (POSIX) driver; every rank may open the same file this way. Throws bfm::Error naming the
  // file when it is missing, not HDF5 (or truncated), not a bfm shard, of another format_version, or inconsistent.
  explicit ShardReader(const std::string& path);
#ifdef BFM_WITH_MPI
  // Collective over `comm`: opens through MPI-IO (one open shared by the ranks, for parallel file systems); the reads
  // below stay independent, each rank its own windows.
  ShardReader(const std::string& path, MPI_Comm comm);
#endif
  ~ShardReader();
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  const std::string& path() const { return path_; }
  const ShardHeader& header() const { return header_; }  // converter, storage, labels, scores' names...
  int64_t n_parcels() const { return header_.n_parcels; }
  int64_t n_timepoints() const { return n_timepoints_; }
  const std::vector<Run>& runs() const { return runs_; }
  const std::vector<Subject>& subjects() const { return subjects_; }
  // Index into subjects() of run `run`'s subject.
  int32_t subject_of(int64_t run) const { return run_subject_.at(static_cast<size_t>(run)); }

  // Rows [start, start + T) of run `run` into out [T, n_parcels]. Errors name the file and run: out of range,
  // checksum failure, read failure.
  void read_window(int64_t run, int64_t start, int64_t T, float* out) const;
  std::vector<float> read_window(int64_t run, int64_t start, int64_t T) const;
  // The same rows of /runs/stim_embedding (out [T, stimulus_dim]) and /runs/label (out [T]); errors if absent.
  void read_stimulus(int64_t run, int64_t start, int64_t T, float* out) const;
  void read_labels(int64_t run, int64_t start, int64_t T, int32_t* out) const;

  struct File;  // the open HDF5 file and datasets (shard_reader.cpp)

 private:
  void open(int64_t fapl);
  void check_window(int64_t run, int64_t start, int64_t T) const;

  std::string path_;
  std::unique_ptr<File> file_;
  ShardHeader header_;
  std::vector<Run> runs_;
  std::vector<Subject> subjects_;
  std::vector<int32_t> run_subject_;
  int64_t n_timepoints_ = 0;
};

}  // namespace bfm::io

#endif  // BFM_WITH_HDF5
