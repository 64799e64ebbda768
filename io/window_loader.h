// The prefetching window loader: the training loop's source of batches. It turns the sampler's windows into one
// contiguous float32 buffer per batch, read by a background thread that runs ahead of compute by as many batches as
// fit in a memory budget the user sets.
//
// Reading by chunks (the default): a batch's windows are mapped to the shard chunks they cover (256 rows x all
// parcels in bfm's shards by default). Where the shard file is memory-mapped (ShardReader::mapped_chunk: datasets
// laid out as bfm writes them; BFM_NO_MMAP=1 turns it off) a chunk's checksum is checked in the mapping the first time
// the reader hands it out and the windows are copied straight out of the page cache (each chunk's pages asked for
// in one read-ahead request, so a corpus larger than memory does not thrash): no read() copy, no chunk cache,
// a page that cannot be read (the file truncated under the mapping, an I/O error) an error naming the file rather
// than SIGBUS (io/mapped_guard.h). Otherwise each chunk is read whole once (ShardReader::read_chunk: pread and our
// Fletcher32 check, or HDF5 for a dataset laid out otherwise) into a chunk cache, and the windows are copied out of
// the cache in the sampler's order. The cache is shared by all shards, least recently used chunks go first, and it holds what the
// read-ahead leaves of the budget (at least one batch's chunks): a chunk used by several windows of a batch, or by
// later batches (the block shuffle's groups; a corpus that fits), is read and checked once while it stays cached.
// Its checksum is checked on every read from the file. `threads` > 1 spreads a batch's direct chunk reads and copies
// over that many threads (the loader's thread and helpers); HDF5 calls stay on the loader's thread.
//
// HDF5 calls (opening the shards, reads of datasets not laid out as bfm writes them, closing) are made by the
// loader's thread only, because Debian's HDF5 is not thread-safe. Several loaders (training and validation) may live
// together: their threads take turns through one process-wide lock. Code outside the loaders must make no HDF5 call
// while one lives.
// The thread reads batch after batch into a bounded queue (mutex + condition variables) and waits while the queue
// holds `depth()` batches; an error on the thread (a corrupt chunk...) is queued after the good batches and
// re-thrown by next() on the caller's thread, naming the file and run. The destructor stops and joins the thread,
// whatever the queue holds.
//
// The sampler runs on the thread, ahead of the caller; state() is its state after the batches the caller has taken
// with next() (not the prefetched ones), which is what a checkpoint must save.
#pragma once

#ifdef BFM_WITH_HDF5

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "io/corpus.h"
#include "io/window_sampler.h"

namespace bfm::io {

struct LoaderOptions {
  int64_t window = 0;               // T, time points per window (the sampler's window length)
  int64_t memory_budget_bytes = 0;  // for prefetched batches: depth = budget / batch bytes, clamped to [1, kMaxDepth];
                                    // what they leave is the chunk cache
  int64_t cache_bytes = -1;         // chunk cache; -1: the budget less the read-ahead; at least one batch's chunks
  int threads = 1;                  // reading threads, the loader's own included
  bool chunk_reads = true;          // false: each window read by its own HDF5 hyperslab read (the earlier path, kept
                                    // for comparison: bench/read.sh)
};

// What the loader's reading cost (bench/read.sh): chunk reads only; seconds summed over the reading threads.
struct LoaderStats {
  int64_t chunks_read = 0;       // chunks read from the files (each checked), or used in a mapping
  int64_t chunk_bytes_read = 0;  // their bytes (checksums included)
  int64_t chunk_hits = 0;        // chunk uses a batch found in the cache
  double read_seconds = 0;       // reading chunks (pread + checksum, or HDF5)
  double copy_seconds = 0;       // copying windows out of the chunks
};

// One local batch of B windows. Rows of the corpus' shards without stimulus embeddings (labels) hold 0 (-1).
struct WindowBatch {
  std::vector<float> timeseries;  // [B, T, P]
  std::vector<float> stimulus;    // [B, S] the stimulus paired with each window (paired_stimulus in the .cpp: the
                                  // one on screen at its start, or the first at t <= T / 4, else 0); empty
                                  // when S = 0
  std::vector<int32_t> label;     // [B] most frequent /runs/label >= 0 in the window (ties: the smallest), -1 if none;
                                  // empty when no shard has labels
  std::vector<Window> windows;    // [B] (global run, start) of each row, runs numbered as in io::Corpus
  SamplerState state_after;       // the sampler's state once this batch is taken
};

class WindowLoader {
 public:
  static constexpr int64_t kMaxDepth = 8;

  // shard_paths: the corpus' shard files in corpus order (the sampler's runs are theirs, numbered shard 0's runs
  // first, as io::Corpus does). Opens them on the loader's thread and starts reading; throws bfm::Error (naming the
  // file) when a shard cannot be opened, parcels differ between shards, or the options are invalid.
  WindowLoader(std::vector<std::string> shard_paths, WindowSampler sampler, const LoaderOptions& options);
  // The same shards as `corpus` (only their paths are taken: no HDF5 call on this thread).
  WindowLoader(const Corpus& corpus, WindowSampler sampler, const LoaderOptions& options);
  ~WindowLoader();
  WindowLoader(const WindowLoader&) = delete;
  WindowLoader& operator=(const WindowLoader&) = delete;

  // The next local batch; blocks until the thread has read it. Re-throws the thread's error (bfm::Error naming the
  // shard file, the run and the window); after an error every call throws it again.
  WindowBatch next();
  // Hands a taken batch's buffers back for the thread to fill again (saves allocating and zeroing B*T*P floats per
  // batch). Optional; kept only while queued + being read + spare batches stay within depth().
  void recycle(WindowBatch&& used);

  int64_t batch_size() const { return batch_; }
  int64_t window() const { return window_; }
  int64_t n_parcels() const { return parcels_; }
  int64_t stimulus_dim() const { return stimulus_dim_; }
  bool labels() const { return labels_; }
  int64_t batch_bytes() const;  // bytes of one WindowBatch's buffers
  int64_t depth() const { return depth_; }  // batches read ahead at most (queued + being read)

  SamplerState state() const;          // after the batches taken by next()
  double data_wait_seconds() const;    // total time next() has blocked, waiting for the thread
  double last_wait_seconds() const;    // how long the last next() blocked
  int64_t batches_read() const;        // batches the thread has finished reading (taken or queued)
  LoaderStats stats() const;           // after the batches read so far
  int64_t cache_bytes() const { return cache_capacity_; }  // the chunk cache's size (0 without chunk reads)

  struct Cache;  // the chunk cache and the helper threads (window_loader.cpp)

 private:
  void run_thread();  // the loader's thread: opens the shards, then reads until stopped or failed
  void start_batch(WindowBatch& b);  // the sampler's next windows; the batch's buffers sized (both paths)
  void read_batch(const std::vector<ShardReader*>& shards, const std::vector<int64_t>& first_run, WindowBatch& b);
  void read_batch_chunks(const std::vector<ShardReader*>& shards, const std::vector<int64_t>& first_run,
                         WindowBatch& b);
  void check_finite(const std::vector<ShardReader*>& shards, const std::vector<int64_t>& first_run,
                    const WindowBatch& b) const;  // a non-finite value is an error naming where it is

  std::vector<std::string> paths_;
  WindowSampler sampler_;  // used by the thread only, after the constructor has returned
  int64_t window_ = 0, batch_ = 0, parcels_ = 0, stimulus_dim_ = 0, depth_ = 1;
  bool labels_ = false;
  int64_t memory_budget_ = 0;
  LoaderOptions options_;
  int64_t cache_capacity_ = 0;
  std::unique_ptr<Cache> cache_;  // used by the loader's thread (and its helpers) only

  mutable std::mutex mutex_;
  std::condition_variable ready_;  // the thread has queued a batch, failed, or finished opening
  std::condition_variable space_;  // the caller took a batch, or the loader is stopping
  std::deque<WindowBatch> queue_;
  std::vector<WindowBatch> spare_;  // recycled buffers
  std::exception_ptr error_;       // the thread's error, re-thrown by next() once the queue is drained
  bool opened_ = false, open_failed_ = false, stopping_ = false;
  int64_t read_ = 0;
  SamplerState consumed_;
  double wait_total_ = 0, wait_last_ = 0;
  LoaderStats stats_;
  std::thread thread_;
};

}  // namespace bfm::io

#endif  // BFM_WITH_HDF5
