// The distributed window sampler: which (run, start) windows of length T each rank reads, batch after batch.
//
// The windows of an epoch are every start 0, stride, 2*stride, ... (up to length - T) of every run long enough,
// optionally each moved by a random jitter in [0, stride) that changes per epoch (so over epochs any start occurs).
// Per epoch a global order is a pseudo-random permutation of them drawn from (seed, epoch); it does not depend on the
// number of ranks. Global batch k is elements [k*G, (k+1)*G) of that order (G = global batch size); rank r of R takes
// elements r, r+R, r+2R, ... of it, so the ranks' parts are disjoint and their union is the same set of windows for
// any R that divides G. The tail of an epoch that does not fill a global batch is dropped (every rank then does the
// same number of steps). The state is (epoch, batch): saved in a checkpoint, restored exactly, even under another R.
//
// The permutation is computed element by element (a Feistel network on the next power of 4, cycle-walked into range),
// so it needs no memory for millions of windows and a restore costs nothing.
//
// Block shuffle (opt-in: SamplerOptions::block > 0; data.shuffle = "block" in a run config). The windows of every run
// are cut into blocks of consecutive starts, max(1, block / stride) windows each (a run's last block may hold fewer),
// so that a block's windows lie in about `block + T` consecutive time points: a few chunks of the shard, read once.
// Per epoch a pseudo-random permutation of the blocks, drawn from (seed, epoch), is cut into groups of
// `shuffle_blocks` consecutive blocks (a shuffle buffer), and the windows of each group are permuted by a permutation
// drawn from (seed, epoch, group); the epoch's global order is group 0's windows, then group 1's, and so on. So an
// epoch still visits every window exactly once, the order depends only on (seed, epoch) and not on the number of
// ranks, ranks split it as above and (epoch, batch) restores it exactly; what changes is that the windows of a global
// batch come from at most `shuffle_blocks` blocks (twice that where it straddles two groups) and consecutive batches
// draw on the same group (the statistical trade-off: docs/TRAINING.md, "Data order and reading").
// The block mode keeps one array of the epoch's block order (8 bytes a block) and per group its first position.
#pragma once

#include <cstdint>
#include <vector>

namespace bfm::io {

struct Window {
  int64_t run = 0;    // index into the run list the sampler was given (e.g. all runs of all shards, in order)
  int64_t start = 0;  // first time point
  bool operator==(const Window&) const = default;
};

struct SamplerState {
  uint64_t epoch = 0;
  uint64_t batch = 0;  // global batches already taken in this epoch
  bool operator==(const SamplerState&) const = default;
};

struct SamplerOptions {
  int64_t window = 0;        // T, time points per window
  int64_t stride = 1;        // between the starts enumerated in a run
  bool jitter = false;       // move each start by a random offset in [0, stride), new every epoch
  int64_t global_batch = 1;  // G, windows per step over all ranks; a multiple of the number of ranks
  uint64_t seed = 0;
  int64_t block = 0;           // > 0: block shuffle, blocks of max(1, block / stride) consecutive windows of a run
  int64_t shuffle_blocks = 1;  // block shuffle: blocks per group (the shuffle buffer)
};

class WindowSampler {
 public:
  // run_lengths: time points of each run. Throws bfm::Error when the options are invalid, G is not a multiple of
  // ranks, or there are fewer than G windows in an epoch.
  WindowSampler(std::vector<int64_t> run_lengths, const SamplerOptions& options, int rank = 0, int ranks = 1);

  int64_t windows_per_epoch() const { return total_; }
  int64_t batches_per_epoch() const { return total_ / options_.global_batch; }
  int64_t local_batch() const { return options_.global_batch / ranks_; }

  // This rank's part of the next global batch (local_batch() windows); moves to the next epoch after the last one.
  std::vector<Window> next_batch();

  SamplerState state() const { return state_; }
  void restore(const SamplerState& state);

  // Element `position` of epoch `epoch`'s global order (the same on every rank and for every number of ranks).
  // Block shuffle: computes (and keeps) that epoch's block order when it is not the one kept; not thread-safe.
  Window global_window(uint64_t epoch, int64_t position) const;

  const SamplerOptions& options() const { return options_; }
  int64_t n_blocks() const { return block_first_.empty() ? 0 : block_first_.back(); }  // block shuffle; else 0

 private:
  Window window_at(uint64_t epoch, int64_t flat) const;  // the flat-th window of the enumeration, jittered
  void order_blocks(uint64_t epoch) const;               // block shuffle: epoch_order_, group_first_ for `epoch`
  int64_t block_windows(int64_t b) const;                // windows in block b

  std::vector<int64_t> lengths_;
  std::vector<int64_t> first_;  // first_[r] = windows in runs before r (size runs + 1)
  SamplerOptions options_;
  int rank_, ranks_;
  int64_t total_ = 0;
  SamplerState state_;
  // Block shuffle.
  int64_t per_block_ = 0;              // windows per (whole) block
  std::vector<int64_t> block_first_;   // [runs + 1] blocks in runs before r
  mutable uint64_t blocks_epoch_ = ~uint64_t{0};  // the epoch epoch_order_ and group_first_ are for
  mutable std::vector<int64_t> epoch_order_;      // [blocks] the epoch's block order
  mutable std::vector<int64_t> group_first_;      // [groups + 1] positions before group g
};

}  // namespace bfm::io
