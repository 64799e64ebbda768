// The window sampler's arithmetic: windows counted per run (prefix sums, binary search from a flat index to its run),
// and a keyed pseudo-random permutation of [0, N) per epoch.
//
// Permutation: a balanced Feistel network of 6 rounds on 2*h bits (4^h >= N) is a bijection of [0, 4^h); applying it
// again until the value falls below N ("cycle walking") gives a bijection of [0, N) with fewer than 4 applications on
// average. Round keys come from bfm::Rng::stream(seed, epoch), so the order is the same on every platform. The block
// shuffle uses two such permutations: of the blocks (seed, epoch) and of each group's windows (seed, epoch, group).
#include "io/window_sampler.h"

#include <algorithm>

#include "base/error.h"
#include "base/hash.h"
#include "base/rng.h"

namespace bfm::io {

namespace {

constexpr int kRounds = 6;
constexpr uint64_t kWindowTag = 0x5a4d91e, kBlockTag = 0xb10c5, kGroupTag = 0x6a0d9;

// A keyed bijection of [0, n): a balanced Feistel network on 2h bits (4^h >= n, h >= 1), cycle-walked into range.
class Feistel {
 public:
  Feistel(Rng keys, uint64_t n) : n_(n) {
    for (auto& k : key_) k = keys.next_u64();
    while ((uint64_t{1} << (2 * half_bits_)) < n) ++half_bits_;
  }
  uint64_t operator()(uint64_t i) const {
    const uint64_t mask = (uint64_t{1} << half_bits_) - 1;
    do {
      uint64_t left = i >> half_bits_, right = i & mask;
      for (int round = 0; round < kRounds; ++round) {
        const uint64_t next = left ^ (mix64(right ^ key_[round]) & mask);
        left = right;
        right = next;
      }
      i = (left << half_bits_) | right;
    } while (i >= n_);
    return i;
  }

 private:
  uint64_t key_[kRounds];
  uint64_t n_;
  int half_bits_ = 1;
};

}  // namespace

WindowSampler::WindowSampler(std::vector<int64_t> run_lengths, const SamplerOptions& options, int rank, int ranks)
    : lengths_(std::move(run_lengths)), options_(options), rank_(rank), ranks_(ranks) {
  require(options.window > 0, "window sampler: window length ", options.window, " (must be > 0)");
  require(options.stride > 0, "window sampler: stride ", options.stride, " (must be > 0)");
  require(ranks > 0 && rank >= 0 && rank < ranks, "window sampler: rank ", rank, " of ", ranks);
  require(options.global_batch > 0 && options.global_batch % ranks == 0, "window sampler: global batch ",
          options.global_batch, " is not a positive multiple of the ", ranks, " ranks");
  require(options.block >= 0, "window sampler: block ", options.block, " time points (must be >= 0; 0: no blocks)");
  require(options.block == 0 || options.shuffle_blocks > 0, "window sampler: shuffle_blocks ",
          options.shuffle_blocks, " (must be > 0)");
  first_.assign(lengths_.size() + 1, 0);
  for (size_t r = 0; r < lengths_.size(); ++r) {
    const int64_t n = lengths_[r] >= options.window ? (lengths_[r] - options.window) / options.stride + 1 : 0;
    first_[r + 1] = first_[r] + n;
  }
  total_ = first_.back();
  require(total_ >= options.global_batch, "window sampler: ", total_, " windows of length ", options.window,
          " in ", lengths_.size(), " runs, fewer than one global batch of ", options.global_batch);
  if (options.block > 0) {
    per_block_ = std::max<int64_t>(1, options.block / options.stride);
    block_first_.assign(lengths_.size() + 1, 0);
    for (size_t r = 0; r < lengths_.size(); ++r)
      block_first_[r + 1] = block_first_[r] + (first_[r + 1] - first_[r] + per_block_ - 1) / per_block_;
  }
}

Window WindowSampler::window_at(uint64_t epoch, int64_t flat) const {
  const auto run = static_cast<int64_t>(std::upper_bound(first_.begin(), first_.end(), flat) - first_.begin()) - 1;
  int64_t start = (flat - first_[static_cast<size_t>(run)]) * options_.stride;
  if (options_.jitter && options_.stride > 1) {
    const uint64_t h = mix64(options_.seed ^ mix64(epoch * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(flat)));
    const int64_t room = lengths_[static_cast<size_t>(run)] - options_.window - start;  // >= 0
    start += static_cast<int64_t>(h % static_cast<uint64_t>(std::min(options_.stride - 1, room) + 1));
  }
  return {run, start};
}

int64_t WindowSampler::block_windows(int64_t b) const {
  const auto r = static_cast<size_t>(std::upper_bound(block_first_.begin(), block_first_.end(), b) -
                                     block_first_.begin() - 1);
  return std::min(per_block_, first_[r + 1] - first_[r] - (b - block_first_[r]) * per_block_);
}

void WindowSampler::order_blocks(uint64_t epoch) const {
  const int64_t blocks = n_blocks(), M = options_.shuffle_blocks;
  const Feistel permutation(Rng::stream(options_.seed, epoch, kBlockTag), static_cast<uint64_t>(blocks));
  epoch_order_.resize(static_cast<size_t>(blocks));
  group_first_.assign(1, 0);
  for (int64_t q = 0; q < blocks; ++q) {
    const auto b = static_cast<int64_t>(permutation(static_cast<uint64_t>(q)));
    epoch_order_[static_cast<size_t>(q)] = b;
    if (q % M == 0) group_first_.push_back(group_first_.back());
    group_first_.back() += block_windows(b);
  }
  blocks_epoch_ = epoch;
}

Window WindowSampler::global_window(uint64_t epoch, int64_t position) const {
  require(position >= 0 && position < total_, "window sampler: position ", position, " outside the ", total_,
          " windows of an epoch");
  if (options_.block == 0) {
    const Feistel permutation(Rng::stream(options_.seed, epoch, kWindowTag), static_cast<uint64_t>(total_));
    return window_at(epoch, static_cast<int64_t>(permutation(static_cast<uint64_t>(position))));
  }
  if (blocks_epoch_ != epoch) order_blocks(epoch);
  const auto g = static_cast<int64_t>(std::upper_bound(group_first_.begin(), group_first_.end(), position) -
                                      group_first_.begin()) - 1;
  const int64_t in_group = group_first_[static_cast<size_t>(g) + 1] - group_first_[static_cast<size_t>(g)];
  const Feistel permutation(Rng::stream(mix64(options_.seed ^ kGroupTag), epoch, static_cast<uint64_t>(g)),
                            static_cast<uint64_t>(in_group));
  auto m = static_cast<int64_t>(permutation(static_cast<uint64_t>(position - group_first_[static_cast<size_t>(g)])));
  const int64_t M = options_.shuffle_blocks, end = std::min(n_blocks(), (g + 1) * M);
  for (int64_t q = g * M; q < end; ++q) {
    const int64_t b = epoch_order_[static_cast<size_t>(q)], n = block_windows(b);
    if (m < n) {
      const auto r = static_cast<size_t>(std::upper_bound(block_first_.begin(), block_first_.end(), b) -
                                         block_first_.begin() - 1);
      return window_at(epoch, first_[r] + (b - block_first_[r]) * per_block_ + m);
    }
    m -= n;
  }
  fail("window sampler: internal error, position ", position, " is in no block of group ", g);
}

std::vector<Window> WindowSampler::next_batch() {
  const int64_t G = options_.global_batch;
  std::vector<Window> out;
  out.reserve(static_cast<size_t>(local_batch()));
  const int64_t base = static_cast<int64_t>(state_.batch) * G;
  for (int64_t i = rank_; i < G; i += ranks_) out.push_back(global_window(state_.epoch, base + i));
  if (static_cast<int64_t>(++state_.batch) >= batches_per_epoch()) {
    ++state_.epoch;
    state_.batch = 0;
  }
  return out;
}

void WindowSampler::restore(const SamplerState& state) {
  require(static_cast<int64_t>(state.batch) < batches_per_epoch(), "window sampler: saved position batch ",
          state.batch, " of epoch ", state.epoch, " is past the ", batches_per_epoch(),
          " batches of an epoch of this corpus (another corpus or window length?)");
  state_ = state;
}

}  // namespace bfm::io
