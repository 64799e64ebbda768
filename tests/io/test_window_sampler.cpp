// The window sampler against a naive enumeration of every (run, start): full coverage per epoch, disjoint parts per
// rank whose union is the same global batch for 1, 2 and 4 ranks, exact resume from a saved state, jitter in range.
// The block shuffle (opt-in) against the same properties, plus its locality: the windows of a group (a shuffle buffer)
// come from exactly `shuffle_blocks` whole blocks.
// (tests/io/test_shards_mpi.cpp repeats the rank checks with real MPI ranks.)
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "io/window_sampler.h"
#include "base/error.h"

namespace {

using namespace bfm::io;

const std::vector<int64_t> kLengths = {100, 7, 64, 300, 31, 32};  // run 1 is shorter than a window

std::set<std::pair<int64_t, int64_t>> all_windows(const std::vector<int64_t>& lengths, int64_t T, int64_t stride) {
  std::set<std::pair<int64_t, int64_t>> out;
  for (size_t r = 0; r < lengths.size(); ++r)
    for (int64_t s = 0; s + T <= lengths[r]; s += stride) out.insert({static_cast<int64_t>(r), s});
  return out;
}

TEST(WindowSampler, EveryWindowOncePerEpoch) {
  for (int64_t stride : {1, 5}) {
    SamplerOptions o{32, stride, false, 1, 9};
    WindowSampler sampler(kLengths, o);
    const auto want = all_windows(kLengths, 32, stride);
    ASSERT_EQ(sampler.windows_per_epoch(), static_cast<int64_t>(want.size()));
    for (uint64_t epoch = 0; epoch < 2; ++epoch) {
      std::set<std::pair<int64_t, int64_t>> seen;
      for (int64_t b = 0; b < sampler.batches_per_epoch(); ++b)
        for (const Window& w : sampler.next_batch()) EXPECT_TRUE(seen.insert({w.run, w.start}).second);
      EXPECT_EQ(seen, want);
      EXPECT_EQ(sampler.state(), (SamplerState{epoch + 1, 0}));
    }
  }
}

TEST(WindowSampler, OrderIsShuffledAndChangesWithEpochAndSeed) {
  SamplerOptions o{32, 1, false, 1, 9};
  WindowSampler a(kLengths, o), b(kLengths, SamplerOptions{32, 1, false, 1, 10});
  std::vector<Window> e0, e1, other;
  for (int i = 0; i < 50; ++i) {
    e0.push_back(a.global_window(0, i));
    e1.push_back(a.global_window(1, i));
    other.push_back(b.global_window(0, i));
  }
  EXPECT_NE(e0, e1);
  EXPECT_NE(e0, other);
  // Not the enumeration order: the first 50 elements come from more than one run.
  std::set<int64_t> runs;
  for (const auto& w : e0) runs.insert(w.run);
  EXPECT_GT(runs.size(), 2u);
}

// 2 and 4 ranks together take the global batches one rank takes (into the third epoch), disjoint parts of each.
void expect_same_global_batches_for_two_and_four_ranks(const SamplerOptions& o) {
  const int64_t G = o.global_batch;
  for (int R : {2, 4}) {
    std::vector<WindowSampler> ranks;
    for (int r = 0; r < R; ++r) ranks.emplace_back(kLengths, o, r, R);
    WindowSampler reference(kLengths, o);
    for (int64_t step = 0; step < 2 * reference.batches_per_epoch() + 3; ++step) {
      std::multiset<std::pair<int64_t, int64_t>> want, got;
      for (const auto& w : reference.next_batch()) want.insert({w.run, w.start});
      for (auto& s : ranks) {
        const auto part = s.next_batch();
        ASSERT_EQ(static_cast<int64_t>(part.size()), G / R);
        for (const auto& w : part) got.insert({w.run, w.start});
      }
      ASSERT_EQ(got, want) << "R " << R << " step " << step;
      std::set<std::pair<int64_t, int64_t>> distinct(got.begin(), got.end());
      EXPECT_EQ(distinct.size(), got.size()) << "ranks overlap";
    }
  }
}

// Every window of 4 epochs (windows of o.window with o's stride and jitter) lies inside its run; returns the starts'
// offsets from the stride grid.
std::set<int64_t> expect_starts_inside_the_runs(const SamplerOptions& o) {
  WindowSampler s(kLengths, o);
  std::set<int64_t> offsets;
  for (uint64_t epoch = 0; epoch < 4; ++epoch)
    for (int64_t i = 0; i < s.windows_per_epoch(); ++i) {
      const Window w = s.global_window(epoch, i);
      EXPECT_GE(w.start, 0);
      EXPECT_LE(w.start + o.window, kLengths[static_cast<size_t>(w.run)]);
      offsets.insert(w.start % o.stride);
    }
  return offsets;
}

// Rank 1 of 2, stopped two batches before an epoch ends and restored from its saved state in a new sampler, takes
// the same next 5 batches (into the next epoch). Returns the saved state and those batches.
std::pair<SamplerState, std::vector<std::vector<Window>>> expect_exact_resume(const SamplerOptions& o) {
  WindowSampler a(kLengths, o, 1, 2);
  const int64_t per_epoch = a.batches_per_epoch();
  for (int64_t i = 0; i < per_epoch - 2; ++i) a.next_batch();
  const SamplerState saved = a.state();
  std::vector<std::vector<Window>> after;
  for (int i = 0; i < 5; ++i) after.push_back(a.next_batch());  // crosses into the next epoch
  EXPECT_EQ(a.state().epoch, saved.epoch + 1);

  WindowSampler b(kLengths, o, 1, 2);
  b.restore(saved);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(b.next_batch(), after[static_cast<size_t>(i)]) << i;
  EXPECT_THROW(b.restore(SamplerState{0, static_cast<uint64_t>(per_epoch)}), bfm::Error);
  return {saved, after};
}

TEST(WindowSampler, SameGlobalBatchesForOneTwoAndFourRanks) {
  expect_same_global_batches_for_two_and_four_ranks(SamplerOptions{32, 3, true, 8, 5});
}

TEST(WindowSampler, JitteredStartsStayInsideTheRun) {
  EXPECT_GT(expect_starts_inside_the_runs(SamplerOptions{32, 10, true, 1, 3}).size(), 5u);  // off the stride grid
}

TEST(WindowSampler, ResumesExactlyFromSavedState) { expect_exact_resume(SamplerOptions{16, 2, true, 4, 77}); }

TEST(WindowSampler, RejectsBadOptions) {
  EXPECT_THROW(WindowSampler(kLengths, SamplerOptions{32, 1, false, 6, 0}, 0, 4), bfm::Error);  // 6 % 4 != 0
  EXPECT_THROW(WindowSampler(kLengths, SamplerOptions{301, 1, false, 1, 0}), bfm::Error);       // no window fits
  EXPECT_THROW(WindowSampler(kLengths, SamplerOptions{0, 1, false, 1, 0}), bfm::Error);
}

// ---- block shuffle (SamplerOptions::block > 0)

SamplerOptions block_options(int64_t T, int64_t stride, bool jitter, int64_t G, uint64_t seed, int64_t block,
                             int64_t shuffle_blocks) {
  SamplerOptions o{T, stride, jitter, G, seed};
  o.block = block;
  o.shuffle_blocks = shuffle_blocks;
  return o;
}

TEST(WindowSamplerBlocks, EveryWindowOncePerEpoch) {
  for (int64_t stride : {1, 5})
    for (int64_t shuffle_blocks : {1, 3, 100}) {
      WindowSampler sampler(kLengths, block_options(32, stride, false, 1, 9, 16, shuffle_blocks));
      const auto want = all_windows(kLengths, 32, stride);
      ASSERT_EQ(sampler.windows_per_epoch(), static_cast<int64_t>(want.size()));
      for (uint64_t epoch = 0; epoch < 2; ++epoch) {
        std::set<std::pair<int64_t, int64_t>> seen;
        for (int64_t b = 0; b < sampler.batches_per_epoch(); ++b)
          for (const Window& w : sampler.next_batch()) EXPECT_TRUE(seen.insert({w.run, w.start}).second);
        EXPECT_EQ(seen, want) << "stride " << stride << " shuffle_blocks " << shuffle_blocks;
      }
    }
}

TEST(WindowSamplerBlocks, GroupsAreWholeBlocksShuffledAndChangeWithEpochAndSeed) {
  // T 8, stride 1, block 4: blocks of 4 windows; runs of 16, 8, 24 and 0 windows (4 + 2 + 6 = 12 blocks); groups of
  // 3 blocks hold 12 consecutive positions of the epoch's order.
  const std::vector<int64_t> lengths = {23, 15, 31, 5};
  const SamplerOptions o = block_options(8, 1, false, 1, 4, 4, 3);
  WindowSampler s(lengths, o);
  ASSERT_EQ(s.windows_per_epoch(), 48);
  ASSERT_EQ(s.n_blocks(), 12);
  std::vector<std::vector<Window>> epochs;
  for (uint64_t epoch = 0; epoch < 3; ++epoch) {
    std::vector<Window> order;
    std::set<std::pair<int64_t, int64_t>> blocks_seen;
    for (int64_t g = 0; g < 4; ++g) {
      std::map<std::pair<int64_t, int64_t>, int> blocks;  // (run, start / 4) -> windows of it in the group
      for (int64_t i = 0; i < 12; ++i) {
        const Window w = s.global_window(epoch, g * 12 + i);
        order.push_back(w);
        ++blocks[{w.run, w.start / 4}];
      }
      EXPECT_EQ(blocks.size(), 3u) << "epoch " << epoch << " group " << g;
      for (const auto& [b, n] : blocks) {
        EXPECT_EQ(n, 4) << "a block's windows all in its group";
        EXPECT_TRUE(blocks_seen.insert(b).second) << "a block in one group per epoch";
      }
    }
    epochs.push_back(order);
  }
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_NE(epochs[1], epochs[2]);
  // Shuffled inside a group: not the blocks' windows one after the other.
  int in_order = 0;
  for (size_t i = 0; i + 1 < epochs[0].size(); ++i)
    in_order += epochs[0][i + 1].run == epochs[0][i].run && epochs[0][i + 1].start == epochs[0][i].start + 1;
  EXPECT_LT(in_order, 20);
  WindowSampler other_seed(lengths, block_options(8, 1, false, 1, 5, 4, 3));
  std::vector<Window> other;
  for (int64_t i = 0; i < 48; ++i) other.push_back(other_seed.global_window(0, i));
  EXPECT_NE(other, epochs[0]);
  // The same options give the same order (nothing but (seed, epoch) decides it), whatever was asked before.
  WindowSampler again(lengths, o);
  for (int64_t i = 47; i >= 0; --i) EXPECT_EQ(again.global_window(2, i), epochs[2][static_cast<size_t>(i)]);
  EXPECT_EQ(again.global_window(0, 5), epochs[0][5]);
}

TEST(WindowSamplerBlocks, SameGlobalBatchesForOneTwoAndFourRanks) {
  expect_same_global_batches_for_two_and_four_ranks(block_options(32, 3, true, 8, 5, 12, 2));
}

TEST(WindowSamplerBlocks, JitteredStartsStayInsideTheRun) {
  expect_starts_inside_the_runs(block_options(32, 10, true, 1, 3, 30, 2));
}

TEST(WindowSamplerBlocks, ResumesExactlyFromSavedState) {
  const SamplerOptions o = block_options(16, 2, true, 4, 77, 20, 3);
  const auto [saved, after] = expect_exact_resume(o);
  // Another number of ranks resumes the same global order: rank 0 of 1 sees both ranks' windows.
  WindowSampler one(kLengths, o);
  WindowSampler two0(kLengths, o, 0, 2);
  two0.restore(saved);
  one.restore(saved);
  const auto whole = one.next_batch(), part0 = two0.next_batch();
  EXPECT_EQ(whole[0], part0[0]);
  EXPECT_EQ(whole[2], part0[1]);
  EXPECT_EQ(whole[1], after[0][0]);
  EXPECT_EQ(whole[3], after[0][1]);
}

TEST(WindowSamplerBlocks, RejectsBadOptions) {
  EXPECT_THROW(WindowSampler(kLengths, block_options(32, 1, false, 1, 0, -1, 2)), bfm::Error);
  EXPECT_THROW(WindowSampler(kLengths, block_options(32, 1, false, 1, 0, 16, 0)), bfm::Error);
}

}  // namespace
