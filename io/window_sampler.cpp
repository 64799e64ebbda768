// The window sampler's arithmetic: windows counted per run (prefix sums, binary search from a flat index to its run),
// and a keyed pseudo-random permutation of [0, N) per epoch.
//
// Permutation: a balanced Feistel network of 6 rounds on 2*h bits (4^h >= N) is a bijection of [0, 4^h); applying it
// again until the value falls below N ("cycle walking") gives a bijection of [0, N) with fewer than 4 applications on
// average. Round keys come from bfm::Rng::stream(seed, epoch), so the order is the same on every platform.
#include "io/window_sampler.h"

#include <algorithm>

#include "runtime/error.h"
#include "runtime/rng.h"

namespace bfm::io {

namespace {

constexpr int kRounds = 6;

uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace

WindowSampler::WindowSampler(std::vector<int64_t> run_lengths, const SamplerOptions& options, int rank, int ranks)
    : lengths_(std::move(run_lengths)), options_(options), rank_(rank), ranks_(ranks) {
  require(options.window > 0, "window sampler: window length ", options.window, " (must be > 0)");
  require(options.stride > 0, "window sampler: stride ", options.stride, " (must be > 0)");
  require(ranks > 0 && rank >= 0 && rank < ranks, "window sampler: rank ", rank, " of ", ranks);
  require(options.global_batch > 0 && options.global_batch % ranks == 0, "window sampler: global batch ",
          options.global_batch, " is not a positive multiple of the ", ranks, " ranks");
  first_.assign(lengths_.size() + 1, 0);
  for (size_t r = 0; r < lengths_.size(); ++r) {
    const int64_t n = lengths_[r] >= options.window ? (lengths_[r] - options.window) / options.stride + 1 : 0;
    first_[r + 1] = first_[r] + n;
  }
  total_ = first_.back();
  require(total_ >= options.global_batch, "window sampler: ", total_, " windows of length ", options.window,
          " in ", lengths_.size(), " runs, fewer than one global batch of ", options.global_batch);
  while ((uint64_t{1} << (2 * half_bits_)) < static_cast<uint64_t>(total_)) ++half_bits_;
}

uint64_t WindowSampler::permute(uint64_t epoch, uint64_t i) const {
  Rng keys = Rng::stream(options_.seed, epoch, 0x5a4d91e);
  uint64_t key[kRounds];
  for (auto& k : key) k = keys.next_u64();
  const uint64_t mask = (uint64_t{1} << half_bits_) - 1;
  do {
    uint64_t left = i >> half_bits_, right = i & mask;
    for (int round = 0; round < kRounds; ++round) {
      const uint64_t next = left ^ (mix(right ^ key[round]) & mask);
      left = right;
      right = next;
    }
    i = (left << half_bits_) | right;
  } while (i >= static_cast<uint64_t>(total_));
  return i;
}

Window WindowSampler::global_window(uint64_t epoch, int64_t position) const {
  require(position >= 0 && position < total_, "window sampler: position ", position, " outside the ", total_,
          " windows of an epoch");
  const auto flat = static_cast<int64_t>(permute(epoch, static_cast<uint64_t>(position)));
  const auto run = static_cast<int64_t>(std::upper_bound(first_.begin(), first_.end(), flat) - first_.begin()) - 1;
  int64_t start = (flat - first_[static_cast<size_t>(run)]) * options_.stride;
  if (options_.jitter && options_.stride > 1) {
    const uint64_t h = mix(options_.seed ^ mix(epoch * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(flat)));
    const int64_t room = lengths_[static_cast<size_t>(run)] - options_.window - start;  // >= 0
    start += static_cast<int64_t>(h % static_cast<uint64_t>(std::min(options_.stride - 1, room) + 1));
  }
  return {run, start};
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
