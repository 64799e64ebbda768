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
  Window global_window(uint64_t epoch, int64_t position) const;

 private:
  uint64_t permute(uint64_t epoch, uint64_t i) const;

  std::vector<int64_t> lengths_;
  std::vector<int64_t> first_;  // first_[r] = windows in runs before r (size runs + 1)
  SamplerOptions options_;
  int rank_, ranks_;
  int64_t total_ = 0;
  int half_bits_ = 1;  // the permutation's domain is 4^half_bits_
  SamplerState state_;
};

}  // namespace bfm::io
