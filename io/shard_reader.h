// Reads one shard file (docs/FORMAT.md): checks its format and version on open, lists its runs and subjects, and
// reads windows (run, start, T) of a run's parcel time series as float32 [T, P], whatever the storage (float32 or
// float16). A chunk whose Fletcher32 checksum fails is reported as an error naming the file and the run.
// Not thread-safe (neither is Debian's parallel HDF5): one reader per thread, or one reading thread; the one exception
// is read_chunk() of a `direct` layout, which makes no HDF5 call.
//
// Chunk reads (the window loader's path): whole chunks of the row datasets. Where a dataset is what bfm writes
// (chunks of [rows, all columns], little-endian float32 / float16 / int32, no filter but Fletcher32, every chunk
// allocated, default file driver, no user block), the open finds every chunk's file address once (HDF5's chunk index)
// and read_chunk() reads it with pread() and checks its Fletcher32 checksum here (the same sum and comparison as
// HDF5's filter, vectorised): no HDF5 call, no copy through HDF5's chunk cache. Any other dataset (compressed by
// h5py, big-endian, opened through MPI-IO...) is read through HDF5, a chunk's rows at a time.
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
  // The same rows of /runs/stimulus (index into header().stimulus_ids, -1 = none); errors if absent.
  void read_stimulus_index(int64_t run, int64_t start, int64_t T, int32_t* out) const;
  // /stimuli/features [M, stimulus_dim] (M = header().stimulus_ids.size()), or empty when the shard has none.
  std::vector<float> read_stimulus_table() const;

  // ---- chunk reads
  enum class Rows { timeseries = 0, stimulus = 1, label = 2 };  // /runs/timeseries, /runs/stim_embedding, /runs/label
  struct ChunkLayout {
    int64_t rows = 0;           // rows per chunk (the dataset's chunk size along time)
    int64_t cols = 0;           // columns (1 for /runs/label)
    int64_t element_bytes = 0;  // in memory: 4 (float32, int32 labels) or 2 (float16 time series, as raw halves)
    int64_t n_chunks = 0;       // chunks covering the dataset's rows
    bool direct = false;        // read_chunk() makes no HDF5 call (thread-safe); else it goes through HDF5
    int64_t buffer_bytes() const { return rows * cols * element_bytes + 4; }  // what read_chunk's `out` must hold
  };
  bool has_rows(Rows which) const;  // /runs/timeseries always; the others when the shard has them
  const ChunkLayout& chunk_layout(Rows which) const;
  // Rows [chunk * rows, min((chunk + 1) * rows, n_timepoints())) of `which` into out (row-major, the in-memory type
  // above; out must hold buffer_bytes()), the chunk's Fletcher32 checksum checked. Errors name the file, run `run`
  // (the run the caller wants rows of: a chunk may hold several), the chunk and, for a checksum, "corrupt".
  // Not direct: an HDF5 call (the caller holds whatever lock serialises HDF5).
  void read_chunk(Rows which, int64_t chunk, void* out, int64_t run) const;
  // Direct chunks without the copy: where the shard file could be memory-mapped (read-only, shared: the page cache
  // itself), a pointer to chunk `chunk`'s rows in the mapping, its Fletcher32 checksum checked there the first time
  // this reader hands it out (later calls trust that check, as a chunk cache trusts its checked copy); nullptr where
  // the dataset is not direct, the file is not mapped, or the chunk lies past the file's end (read_chunk then says
  // what is wrong). Thread-safe. A page that cannot be read while checking (the file truncated under the mapping, an
  // I/O error) is an error naming the file, not SIGBUS (io/mapped_guard.h); readers of the returned rows guard their
  // own accesses the same way. The pointer lives as long as the reader.
  const unsigned char* mapped_chunk(Rows which, int64_t chunk, int64_t run) const;
  bool mapped() const;  // the file is memory-mapped (some dataset direct, mmap succeeded, BFM_NO_MMAP unset)

  struct File;  // the open HDF5 file and datasets (shard_reader.cpp)

 private:
  void open(int64_t fapl);
  void find_chunks();  // chunk layouts and, where possible, the chunks' file addresses
  void check_window(int64_t run, int64_t start, int64_t T) const;

  std::string path_;
  std::unique_ptr<File> file_;
  ShardHeader header_;
  std::vector<Run> runs_;
  std::vector<Subject> subjects_;
  std::vector<int32_t> run_subject_;
  int64_t n_timepoints_ = 0;
  ChunkLayout layout_[3];
};

// HDF5's Fletcher32 checksum (H5Z_FILTER_FLETCHER32: 16-bit big-endian words, sums folded every 360 words) of
// `bytes` bytes, bit for bit; computed a block at a time in a form the compiler vectorises.
uint32_t fletcher32(const void* data, size_t bytes);

}  // namespace bfm::io

#endif  // BFM_WITH_HDF5
