// Real MPI ranks (run under mpirun -np 2 and -np 4): every rank writes its own runs into one shared shard
// collectively (float32 and float16), then every rank reads all runs back, with the POSIX and the MPI-IO reader,
// and compares them with values regenerated from the formula (also the optional label names, stimulus table and
// per-time-point stimulus index); the window sampler's parts on the real ranks are
// disjoint, cover each epoch, equal the one-rank global batches, and resume exactly. Only rank 0 prints.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include "io/half.h"
#include "io/shard_reader.h"
#include "io/shard_writer.h"
#include "io/window_sampler.h"
#include "base/error.h"

namespace {

namespace fs = std::filesystem;
using namespace bfm::io;

int rank_, ranks_;
constexpr int64_t P = 6;

// Runs of rank r: r % 3 runs (rank 2 writes none), of lengths that cross chunk boundaries.
int64_t runs_of(int r) { return r == 2 ? 0 : 1 + r % 3; }
int64_t length_of(int r, int64_t i) { return 90 + 170 * i + 13 * r; }
float value(int r, int64_t i, int64_t t, int64_t p) {
  return static_cast<float>(std::sin(0.37 * t + 1.3 * p + 2.1 * i + 0.7 * r) * (1.0 + r));
}

std::string shared_dir() {
  std::string dir;
  if (rank_ == 0) dir = "/tmp/bfm-test-mpi-" + std::to_string(::getpid());
  uint64_t n = dir.size();
  MPI_Bcast(&n, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  dir.resize(n);
  MPI_Bcast(dir.data(), static_cast<int>(n), MPI_CHAR, 0, MPI_COMM_WORLD);
  if (rank_ == 0) fs::create_directories(dir);
  MPI_Barrier(MPI_COMM_WORLD);
  return dir;
}

void write_and_check(Storage storage) {
  const std::string dir = shared_dir(), path = dir + "/shard-00000.h5";
  ShardHeader h;
  h.n_parcels = P;
  h.atlas = "mpi-test";
  h.storage = storage;
  h.labels = true;
  // The optional stimulus table and index (bfm convert of a study with events), written collectively too.
  h.label_names = {"face", "house"};
  h.stimulus_ids = {"clip-a", "clip-b", "clip-c"};
  h.stimulus_dim = 2;
  h.stimulus_features = {1, 2, 3, 4, 5, 6};
  std::vector<std::vector<float>> data;
  std::vector<std::vector<int32_t>> labels, stimulus;
  std::vector<RunView> runs;
  for (int64_t i = 0; i < runs_of(rank_); ++i) {
    const int64_t n = length_of(rank_, i);
    data.emplace_back(static_cast<size_t>(n * P));
    labels.emplace_back(static_cast<size_t>(n), static_cast<int32_t>(100 * rank_ + i));
    stimulus.emplace_back(static_cast<size_t>(n), static_cast<int32_t>((rank_ + i) % 3));
    stimulus.back().front() = -1;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t p = 0; p < P; ++p) data.back()[static_cast<size_t>(t * P + p)] = value(rank_, i, t, p);
  }
  for (int64_t i = 0; i < runs_of(rank_); ++i)
    runs.push_back(RunView{bfm::io::Run{"sub-r" + std::to_string(rank_), "ses-" + std::to_string(i), "study", "rest", "site",
                               "", 0.5 + rank_, length_of(rank_, i), 0},
                           data[static_cast<size_t>(i)].data(), nullptr, labels[static_cast<size_t>(i)].data(),
                           stimulus[static_cast<size_t>(i)].data()});
  std::vector<Subject> subjects = {Subject{"sub-r" + std::to_string(rank_), 20.0f + static_cast<float>(rank_), "F", "", {}}};
  if (runs.empty()) subjects.clear();
  write_shard_collective(MPI_COMM_WORLD, path, h, subjects, runs);
  ASSERT_TRUE(fs::exists(path));
  ASSERT_FALSE(fs::exists(path + ".tmp"));

  for (int mode = 0; mode < 2; ++mode) {
    auto reader = mode == 0 ? std::make_unique<ShardReader>(path) : std::make_unique<ShardReader>(path, MPI_COMM_WORLD);
    ASSERT_EQ(reader->header().label_names, h.label_names);
    ASSERT_EQ(reader->header().stimulus_ids, h.stimulus_ids);
    ASSERT_EQ(reader->read_stimulus_table(), h.stimulus_features);
    size_t k = 0;
    int64_t row = 0;
    for (int r = 0; r < ranks_; ++r)
      for (int64_t i = 0; i < runs_of(r); ++i, ++k) {
        ASSERT_LT(k, reader->runs().size());
        const Run& run = reader->runs()[k];
        ASSERT_EQ(run.subject, "sub-r" + std::to_string(r));
        ASSERT_EQ(run.length, length_of(r, i));
        ASSERT_EQ(run.offset, row);
        ASSERT_DOUBLE_EQ(run.tr, 0.5 + r);
        ASSERT_EQ(reader->subjects()[static_cast<size_t>(reader->subject_of(static_cast<int64_t>(k)))].age, 20.0f + r);
        row += run.length;
        const auto w = reader->read_window(static_cast<int64_t>(k), 0, run.length);
        for (int64_t t = 0; t < run.length; ++t)
          for (int64_t p = 0; p < P; ++p) {
            float want = value(r, i, t, p);
            if (storage == Storage::float16) want = half_to_float(float_to_half(want));
            ASSERT_EQ(w[static_cast<size_t>(t * P + p)], want) << "run " << k << " t " << t << " p " << p;
          }
        std::vector<int32_t> l(static_cast<size_t>(run.length));
        reader->read_labels(static_cast<int64_t>(k), 0, run.length, l.data());
        ASSERT_EQ(l.front(), 100 * r + i);
        ASSERT_EQ(l.back(), 100 * r + i);
        reader->read_stimulus_index(static_cast<int64_t>(k), 0, run.length, l.data());
        ASSERT_EQ(l.front(), -1);
        ASSERT_EQ(l.back(), (r + i) % 3);
      }
    ASSERT_EQ(k, reader->runs().size());
    ASSERT_EQ(row, reader->n_timepoints());
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank_ == 0) fs::remove_all(dir);
}

TEST(ShardsMpi, CollectiveWriteFloat32) { write_and_check(Storage::float32); }
TEST(ShardsMpi, CollectiveWriteFloat16) { write_and_check(Storage::float16); }

TEST(ShardsMpi, InvalidRunOnOneRankFailsOnEveryRank) {
  const std::string dir = shared_dir(), path = dir + "/bad.h5";
  ShardHeader h;
  h.n_parcels = P;
  std::vector<float> ts(10 * P, 0.0f);
  std::vector<RunView> runs = {RunView{bfm::io::Run{"s", "", "", "", "", "", rank_ == ranks_ - 1 ? -1.0 : 1.0, 10, 0},
                                       ts.data(), nullptr, nullptr}};
  std::string message;
  try {
    write_shard_collective(MPI_COMM_WORLD, path, h, {}, runs);
  } catch (const bfm::Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("rank " + std::to_string(ranks_ - 1)), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(path));
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank_ == 0) fs::remove_all(dir);
}

// All ranks' windows of a batch, gathered as (run, start) pairs in rank order.
std::vector<std::pair<int64_t, int64_t>> gather(const std::vector<Window>& mine) {
  std::vector<int64_t> flat;
  for (const auto& w : mine) flat.insert(flat.end(), {w.run, w.start});
  std::vector<int64_t> all(flat.size() * static_cast<size_t>(ranks_));
  MPI_Allgather(flat.data(), static_cast<int>(flat.size()), MPI_INT64_T, all.data(), static_cast<int>(flat.size()),
                MPI_INT64_T, MPI_COMM_WORLD);
  std::vector<std::pair<int64_t, int64_t>> out;
  for (size_t i = 0; i < all.size(); i += 2) out.push_back({all[i], all[i + 1]});
  return out;
}

// Both sampling modes: every window shuffled (the default) and the block shuffle (blocks of 40 starts, 3 a group).
class SamplerMpi : public ::testing::TestWithParam<int64_t> {};
INSTANTIATE_TEST_SUITE_P(Modes, SamplerMpi, ::testing::Values(int64_t{0}, int64_t{40}));

TEST_P(SamplerMpi, PartsAreDisjointCoverTheEpochAndMatchOneRank) {
  const std::vector<int64_t> lengths = {120, 50, 33, 260, 80, 64, 12};
  SamplerOptions o{32, 1, false, 8, 2024};
  o.block = GetParam();
  o.shuffle_blocks = 3;
  WindowSampler mine(lengths, o, rank_, ranks_), one(lengths, o, 0, 1);
  std::multiset<std::pair<int64_t, int64_t>> epoch;
  for (int64_t b = 0; b < mine.batches_per_epoch(); ++b) {
    const auto all = gather(mine.next_batch());
    const auto ref = one.next_batch();
    std::multiset<std::pair<int64_t, int64_t>> got(all.begin(), all.end()), want;
    for (const auto& w : ref) want.insert({w.run, w.start});
    ASSERT_EQ(got, want) << "batch " << b;
    epoch.insert(all.begin(), all.end());
  }
  // Disjoint and covering: no window twice, and all but the dropped tail (fewer than one global batch) seen.
  std::set<std::pair<int64_t, int64_t>> distinct(epoch.begin(), epoch.end());
  EXPECT_EQ(distinct.size(), epoch.size());
  EXPECT_EQ(static_cast<int64_t>(epoch.size()), mine.batches_per_epoch() * 8);
  EXPECT_LT(mine.windows_per_epoch() - static_cast<int64_t>(epoch.size()), 8);
  EXPECT_EQ(mine.state(), (SamplerState{1, 0}));

  // Resume: a fresh sampler restored to a saved state continues with the same windows.
  for (int i = 0; i < 3; ++i) mine.next_batch();
  const SamplerState saved = mine.state();
  const auto next = mine.next_batch();
  WindowSampler resumed(lengths, o, rank_, ranks_);
  resumed.restore(saved);
  EXPECT_EQ(resumed.next_batch(), next);
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks_);
  ::testing::InitGoogleTest(&argc, argv);
  if (rank_ != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS() != 0;
  MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return failed;
}
