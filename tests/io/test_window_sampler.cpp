// The window sampler against a naive enumeration of every (run, start): full coverage per epoch, disjoint parts per
// rank whose union is the same global batch for 1, 2 and 4 ranks, exact resume from a saved state, jitter in range.
// (tests/io/test_shards_mpi.cpp repeats the rank checks with real MPI ranks.)
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <utility>

#include "io/window_sampler.h"
#include "runtime/error.h"

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

TEST(WindowSampler, SameGlobalBatchesForOneTwoAndFourRanks) {
  const int64_t G = 8;
  WindowSampler one(kLengths, SamplerOptions{32, 3, true, G, 5});
  for (int R : {2, 4}) {
    std::vector<WindowSampler> ranks;
    for (int r = 0; r < R; ++r) ranks.emplace_back(kLengths, SamplerOptions{32, 3, true, G, 5}, r, R);
    WindowSampler reference(kLengths, SamplerOptions{32, 3, true, G, 5});
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

TEST(WindowSampler, JitteredStartsStayInsideTheRun) {
  WindowSampler s(kLengths, SamplerOptions{32, 10, true, 1, 3});
  std::set<int64_t> offsets;
  for (uint64_t epoch = 0; epoch < 4; ++epoch)
    for (int64_t i = 0; i < s.windows_per_epoch(); ++i) {
      const Window w = s.global_window(epoch, i);
      ASSERT_GE(w.start, 0);
      ASSERT_LE(w.start + 32, kLengths[static_cast<size_t>(w.run)]);
      offsets.insert(w.start % 10);
    }
  EXPECT_GT(offsets.size(), 5u);  // starts off the stride grid occur
}

TEST(WindowSampler, ResumesExactlyFromSavedState) {
  SamplerOptions o{16, 2, true, 4, 77};
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
}

TEST(WindowSampler, RejectsBadOptions) {
  EXPECT_THROW(WindowSampler(kLengths, SamplerOptions{32, 1, false, 6, 0}, 0, 4), bfm::Error);  // 6 % 4 != 0
  EXPECT_THROW(WindowSampler(kLengths, SamplerOptions{301, 1, false, 1, 0}), bfm::Error);       // no window fits
  EXPECT_THROW(WindowSampler(kLengths, SamplerOptions{0, 1, false, 1, 0}), bfm::Error);
}

}  // namespace
