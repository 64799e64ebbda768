// The communicator (runtime/comm.h) and the gradient buckets (runtime/grad_buckets.h) on real ranks: one program, its
// own main, run under mpirun -np 1, 2 and 4 (a plain run where the build has no MPI). Every collective is checked
// against a naive reference that each rank computes in double from every rank's data, value(r, i) regenerated from
// a formula: sums of small integers exactly (any order of adding them is exact in float), other sums to rounding.
// The mpi back-end runs both whole and split into pieces of 7 elements (the path counts above INT_MAX take). The
// nccl test runs where the build has NCCL and there is a GPU per rank, and skips itself (saying why) elsewhere.
// Only rank 0 prints; a failure on any rank fails the program.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../common/mpi_test_main.h"
#include "runtime/comm.h"
#include "runtime/device.h"
#include "base/error.h"
#include "runtime/grad_buckets.h"
#include "runtime/world.h"

#ifdef BFM_WITH_NCCL
#include <cuda_runtime.h>
#endif

namespace {

using namespace bfm::runtime;

int rank_ = 0, ranks_ = 1;

// Small integers: any order of summing up to a few thousand of them is exact in float.
[[maybe_unused]] float small_int(int r, int64_t i) { return static_cast<float>((i * 7 + r * 13) % 61 - 30); }
// Values whose sums round, in [-0.5, 0.5) * (1 + r / 4). Only exactly rounded operations, so that every evaluation
// gives the same float (a std::sin here may differ between a vectorised loop and a scalar call).
float wavy(int r, int64_t i) {
  const int64_t hash = (i * 2654435761LL + r * 40503LL + 12345) % 1000003;
  return static_cast<float>((static_cast<double>(hash) / 1000003.0 - 0.5) * (1.0 + 0.25 * r));
}

// Every got[i] within tol(i) of want(i) (a double); the failure names the count, the rank and the first mismatch.
template <class Want, class Tol>
::testing::AssertionResult all_near(const float* got, int64_t n, Want want, Tol tol) {
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < n; ++i)
    if (!(std::abs(static_cast<double>(got[i]) - want(i)) <= tol(i)) && bad++ == 0) first = i;
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << n << " elements differ on rank " << rank_ << " of "
                                       << ranks_ << "; first at " << first << ": got " << got[first] << ", want "
                                       << want(first);
}
template <class Want>
::testing::AssertionResult all_equal(const float* got, int64_t n, Want want) {
  return all_near(got, n, want, [](int64_t) { return 0.0; });
}

double sum_over_ranks(float (*value)(int, int64_t), int64_t i) {
  double s = 0;
  for (int r = 0; r < ranks_; ++r) s += value(r, i);
  return s;
}
double abs_sum_over_ranks(float (*value)(int, int64_t), int64_t i) {
  double s = 0;
  for (int r = 0; r < ranks_; ++r) s += std::abs(value(r, i));
  return s;
}
// The rounding a float sum of ranks_ terms may have, with room: (ranks_ - 1) roundings of at most eps/2 of sum |x|.
double sum_tolerance(float (*value)(int, int64_t), int64_t i) {
  return ranks_ * FLT_EPSILON * abs_sum_over_ranks(value, i);
}

std::vector<float> filled(int64_t n, float (*value)(int, int64_t), int r) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = value(r, i);
  return v;
}

// The host communicator of the world: mpi where built, else self.
std::unique_ptr<Communicator> world_comm() {
#ifdef BFM_WITH_MPI
  return make_mpi_communicator(MPI_COMM_WORLD);
#else
  return make_self_communicator();
#endif
}

// --- self

TEST(SelfCommunicator, IsTheIdentity) {
  auto comm = make_self_communicator();
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->size(), 1);
  EXPECT_STREQ(comm->backend(), "self");
  std::vector<float> data = filled(37, wavy, 3), before = data, out(37, -1.0f);
  comm->allreduce_sum(data.data(), 37);
  EXPECT_EQ(data, before);
  comm->broadcast(data.data(), 37, 0);
  EXPECT_EQ(data, before);
  comm->allgather(data.data(), out.data(), 37);
  EXPECT_EQ(out, before);
  std::fill(out.begin(), out.end(), -1.0f);
  comm->reduce_scatter_sum(data.data(), out.data(), 37);
  EXPECT_EQ(out, before);
  std::vector<double> host = {1.5, -2.25, 1e300};
  comm->allreduce_sum_host(host.data(), 3);
  comm->allreduce_max_host(host.data(), 3);
  EXPECT_EQ(host, (std::vector<double>{1.5, -2.25, 1e300}));
  const int64_t h = comm->start_allreduce_sum(data.data(), 37);
  comm->progress();
  comm->wait(h);
  EXPECT_EQ(data, before);
  EXPECT_THROW(comm->wait(h), bfm::Error);
  EXPECT_THROW(comm->wait(987654), bfm::Error);
  EXPECT_THROW(comm->broadcast(data.data(), 37, 1), bfm::Error);
  comm->barrier();
}

// --- the choice of back-end

// NCCL takes one rank per GPU: the most ranks on one GPU, counted by the GPUs' UUIDs (a rank bound to its own GPU
// sees it as device 0, so indices would not tell). Here as ids of one character.
TEST(MakeCommunicator, CountsTheRanksOnOneDeviceByItsId) {
  using bfm::runtime::detail::most_ranks_on_one_device;
  EXPECT_EQ(most_ranks_on_one_device({}), 0);
  EXPECT_EQ(most_ranks_on_one_device({"a"}), 0);
  EXPECT_EQ(most_ranks_on_one_device({"a", "b", "c", "d"}), 0);  // 4 ranks, each bound to its own GPU
  EXPECT_EQ(most_ranks_on_one_device({"a", "a"}), 2);            // 2 ranks on one GPU
  EXPECT_EQ(most_ranks_on_one_device({"a", "b", "a", "c", "a"}), 3);
  EXPECT_EQ(most_ranks_on_one_device({"a", "", "a"}), 0);        // a rank names no GPU: no claim
}

TEST(MakeCommunicator, ChoosesTheBackEnd) {
  EXPECT_STREQ(make_communicator("self", false)->backend(), "self");
  auto chosen = make_communicator("auto", false);
#ifdef BFM_WITH_MPI
  EXPECT_STREQ(chosen->backend(), "mpi");
  EXPECT_STREQ(make_communicator("mpi", false)->backend(), "mpi");
#else
  EXPECT_STREQ(chosen->backend(), "self");
  EXPECT_THROW(make_communicator("mpi", false), bfm::Error);
#endif
  EXPECT_EQ(chosen->size(), ranks_);
  EXPECT_EQ(chosen->rank(), rank_);
  EXPECT_THROW(make_communicator("nccl", false), bfm::Error);  // not on the GPU, or no NCCL
#ifndef BFM_WITH_NCCL
  EXPECT_THROW(make_communicator("nccl", true), bfm::Error);
#endif
  try {
    make_communicator("gloo", false);
    ADD_FAILURE() << "an unknown back-end was accepted";
  } catch (const bfm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'gloo'"), std::string::npos) << e.what();
  }
}

#ifdef BFM_WITH_MPI
// --- mpi, whole (max count INT_MAX) and split into pieces of 7 elements

class MpiCommunicator : public ::testing::TestWithParam<int64_t> {
 protected:
  std::unique_ptr<Communicator> comm = bfm::runtime::detail::make_mpi_communicator(MPI_COMM_WORLD, GetParam());
  // Counts that are multiples of nothing in particular, 0 and 1 included; the split runs make many calls per element
  // block, so they stay shorter.
  std::vector<int64_t> counts() const {
    if (GetParam() < 1000) return {0, 1, 2, 7, 13, 300};
    return {0, 1, 2, 7, 13, 1000, 65537};
  }
};

TEST_P(MpiCommunicator, KnowsItsWorld) {
  EXPECT_EQ(comm->rank(), rank_);
  EXPECT_EQ(comm->size(), ranks_);
  EXPECT_STREQ(comm->backend(), "mpi");
}

TEST_P(MpiCommunicator, AllreduceSumOfSmallIntegersIsExact) {
  for (int64_t n : counts()) {
    std::vector<float> data = filled(n, small_int, rank_);
    comm->allreduce_sum(data.data(), n);
    EXPECT_TRUE(all_equal(data.data(), n, [](int64_t i) { return sum_over_ranks(small_int, i); })) << "n " << n;
  }
}

TEST_P(MpiCommunicator, AllreduceSumRoundsLikeTheSumInDouble) {
  for (int64_t n : counts()) {
    std::vector<float> data = filled(n, wavy, rank_);
    comm->allreduce_sum(data.data(), n);
    EXPECT_TRUE(all_near(
        data.data(), n, [](int64_t i) { return sum_over_ranks(wavy, i); },
        [](int64_t i) { return sum_tolerance(wavy, i); }))
        << "n " << n;
  }
}

TEST_P(MpiCommunicator, AllgatherPutsEveryRankInRankOrder) {
  for (int64_t n : counts()) {
    const std::vector<float> send = filled(n, wavy, rank_);
    std::vector<float> recv(static_cast<size_t>(ranks_ * n), NAN);
    comm->allgather(send.data(), recv.data(), n);
    EXPECT_TRUE(all_equal(recv.data(), ranks_ * n, [n](int64_t j) { return wavy(int(j / n), j % n); })) << "n " << n;
    // In place: this rank's part already sits at recv + rank * n.
    std::vector<float> in_place(static_cast<size_t>(ranks_ * n), NAN);
    std::copy(send.begin(), send.end(), in_place.begin() + rank_ * n);
    comm->allgather(in_place.data() + rank_ * n, in_place.data(), n);
    EXPECT_TRUE(all_equal(in_place.data(), ranks_ * n, [n](int64_t j) { return wavy(int(j / n), j % n); }))
        << "in place, n " << n;
  }
}

TEST_P(MpiCommunicator, ReduceScatterSumGivesEveryRankItsShareOfTheSum) {
  for (int64_t n : counts()) {
    const std::vector<float> send = filled(ranks_ * n, small_int, rank_);
    std::vector<float> recv(static_cast<size_t>(n), NAN);
    comm->reduce_scatter_sum(send.data(), recv.data(), n);
    EXPECT_TRUE(all_equal(recv.data(), n, [n](int64_t i) { return sum_over_ranks(small_int, rank_ * n + i); }))
        << "n " << n;
    const std::vector<float> wavy_send = filled(ranks_ * n, wavy, rank_);
    comm->reduce_scatter_sum(wavy_send.data(), recv.data(), n);
    EXPECT_TRUE(all_near(
        recv.data(), n, [n](int64_t i) { return sum_over_ranks(wavy, rank_ * n + i); },
        [n](int64_t i) { return sum_tolerance(wavy, rank_ * n + i); }))
        << "n " << n;
  }
}

TEST_P(MpiCommunicator, BroadcastCopiesTheRootsData) {
  for (int root : {ranks_ - 1, ranks_ / 2}) {
    for (int64_t n : counts()) {
      std::vector<float> data = rank_ == root ? filled(n, wavy, root) : std::vector<float>(static_cast<size_t>(n), -7);
      comm->broadcast(data.data(), n, root);
      EXPECT_TRUE(all_equal(data.data(), n, [root](int64_t i) { return wavy(root, i); }))
          << "root " << root << ", n " << n;
    }
  }
  std::vector<float> data(3);
  EXPECT_THROW(comm->broadcast(data.data(), 3, ranks_), bfm::Error);
  EXPECT_THROW(comm->broadcast(data.data(), 3, -1), bfm::Error);
}

TEST_P(MpiCommunicator, HostSumAndMaxInDouble) {
  const auto value = [](int r, int64_t i) { return std::cos(0.5 * static_cast<double>(i) + r) * (r + 1) * 1e10; };
  for (int64_t n : counts()) {
    std::vector<double> sum(static_cast<size_t>(n)), max(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) sum[size_t(i)] = max[size_t(i)] = value(rank_, i);
    comm->allreduce_sum_host(sum.data(), n);
    comm->allreduce_max_host(max.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      double want_sum = 0, want_max = -INFINITY, scale = 0;
      for (int r = 0; r < ranks_; ++r) {
        want_sum += value(r, i);
        want_max = std::max(want_max, value(r, i));
        scale += std::abs(value(r, i));
      }
      ASSERT_NEAR(sum[size_t(i)], want_sum, ranks_ * DBL_EPSILON * scale) << "n " << n << ", i " << i;
      ASSERT_EQ(max[size_t(i)], want_max) << "n " << n << ", i " << i;
    }
  }
}

TEST_P(MpiCommunicator, StartedAllreducesCompleteInAnyWaitOrder) {
  const std::vector<int64_t> sizes = {1000, 1, 0, 337};
  std::vector<std::vector<float>> ranges;
  std::vector<int64_t> handles;
  for (size_t k = 0; k < sizes.size(); ++k) {
    ranges.push_back(filled(sizes[k], small_int, rank_ + int(k)));
    handles.push_back(comm->start_allreduce_sum(ranges.back().data(), sizes[k]));
    comm->progress();
  }
  comm->wait(handles[3]);
  comm->wait(handles[0]);
  comm->progress();
  comm->wait_all();
  for (size_t k = 0; k < sizes.size(); ++k)
    EXPECT_TRUE(all_equal(ranges[k].data(), sizes[k], [k](int64_t i) {
      double s = 0;
      for (int r = 0; r < ranks_; ++r) s += small_int(r + int(k), i);
      return s;
    })) << "range "
        << k;
  EXPECT_THROW(comm->wait(handles[1]), bfm::Error);  // completed by wait_all
  EXPECT_THROW(comm->wait(handles.back() + 100), bfm::Error);
}

INSTANTIATE_TEST_SUITE_P(MaxCount, MpiCommunicator, ::testing::Values(int64_t{INT_MAX}, int64_t{7}),
                         [](const auto& param_info) { return param_info.param == INT_MAX ? "Whole" : "SplitBy7"; });

TEST(MpiCommunicatorErrors, AFailedCallThrowsNamingTheOperationAndTheRank) {
  // Rank 1 expects fewer elements than rank 0 broadcasts: its broadcast fails (message truncated). With more ranks a
  // rank that fails could leave its part of the broadcast tree undone, and others would wait forever.
  if (ranks_ != 2) GTEST_SKIP() << "runs with 2 ranks";
  auto comm = make_mpi_communicator(MPI_COMM_WORLD);
  std::vector<float> data(1000);
  if (rank_ == 0) {
    comm->broadcast(data.data(), 1000, 0);
  } else {
    try {
      comm->broadcast(data.data(), 10, 0);
      ADD_FAILURE() << "a truncated broadcast did not throw";
    } catch (const bfm::Error& e) {
      EXPECT_NE(std::string(e.what()).find("broadcast failed on rank 1 of 2"), std::string::npos) << e.what();
    }
  }
}

TEST(MpiCommunicatorTiming, BlockedSecondsCountTheWaitInABarrier) {
  auto comm = make_mpi_communicator(MPI_COMM_WORLD);
  comm->barrier();
  const double before = comm->blocked_seconds();
  if (rank_ == 0) std::this_thread::sleep_for(std::chrono::milliseconds(60));
  comm->barrier();
  const double waited = comm->blocked_seconds() - before;
  EXPECT_GE(waited, 0.0);
  if (rank_ != 0) {
    EXPECT_GE(waited, 0.05) << "rank " << rank_ << " waited 60 ms for rank 0 in the barrier";
  }
}

// The collective timeout (the stopped rank, the job's end: tests/launch/cli/test_faults.py). Here: a rank that is only
// slow (it arrives after the timeout, within the grace while the others ask) is waited for, and the sum is right; a
// rank busy beyond timeout and grace is named by every rank that waits, in one CollectiveTimeout.
TEST(MpiCommunicatorTimeout, ASlowRankIsWaitedForWithinTheGrace) {
  if (ranks_ < 2) GTEST_SKIP() << "needs two ranks";
  auto comm = make_mpi_communicator(MPI_COMM_WORLD);
  comm->set_timeout(0.5);  // grace: 2 s
  if (rank_ == ranks_ - 1) std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  double x = 1;
  EXPECT_NO_THROW(comm->allreduce_sum_host(&x, 1));
  EXPECT_EQ(x, ranks_);
}

TEST(MpiCommunicatorTimeout, ABusyRankIsNamedByTheOthers) {
  if (ranks_ < 2) GTEST_SKIP() << "needs two ranks";
  auto comm = make_mpi_communicator(MPI_COMM_WORLD);
  comm->barrier();
  comm->set_timeout(0.3);
  comm->set_context("step 7");
  const int busy = ranks_ - 1;
  std::string report;
  if (rank_ == busy) {
    // Not in a collective (a stopped or hung rank looks the same to the others): no answer to their questions.
    std::this_thread::sleep_for(std::chrono::milliseconds(3500));
  } else {
    double x = 1;
    try {
      comm->allreduce_sum_host(&x, 1);
      ADD_FAILURE() << "rank " << rank_ << ": the all-reduce completed without rank " << busy;
    } catch (const bfm::runtime::CollectiveTimeout& e) {
      report = e.what();
    }
    EXPECT_NE(report.find("rank " + std::to_string(rank_) + " of " + std::to_string(ranks_)), std::string::npos) << report;
    EXPECT_NE(report.find("allreduce_sum_host"), std::string::npos) << report;
    EXPECT_NE(report.find("step 7"), std::string::npos) << report;
    EXPECT_NE(report.find("for rank " + std::to_string(busy) + ", which did not answer"), std::string::npos) << report;
    if (ranks_ > 2) EXPECT_NE(report.find("in the same collective"), std::string::npos) << report;
  }
  // The all-reduce the others left is still open on their side: the busy rank joins it now, so that the
  // communicator's traffic is matched before the world's next test (the others' pending request completes with it).
  if (rank_ == busy) {
    double x = 1;
    comm->set_timeout(0);
    comm->allreduce_sum_host(&x, 1);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}
#endif

// --- gradient buckets

using Tensors = std::vector<std::pair<int64_t, int64_t>>;

Tensors contiguous(const std::vector<int64_t>& sizes) {
  Tensors t;
  int64_t at = 0;
  for (int64_t s : sizes) {
    t.emplace_back(at, s);
    at += s;
  }
  return t;
}

TEST(GradientBuckets, AreFormedFromTheEndOfTheArena) {
  const Tensors tensors = contiguous({3, 10, 1, 7, 5, 2, 0, 4});  // offsets 0 3 13 14 21 26 28 28, end 32
  // 8 floats per bucket: {28..32} is 16 bytes, so tensors 4..7 (from 21) make the first bucket of 44 bytes.
  GradientBuckets eight(tensors, 8 * sizeof(float));
  EXPECT_EQ(eight.ranges(), (Tensors{{21, 11}, {13, 8}, {3, 10}, {0, 3}}));
  EXPECT_EQ(eight.n_buckets(), 4);
  GradientBuckets one_byte(tensors, 1);  // one tensor each, but the empty one joins its predecessor
  EXPECT_EQ(one_byte.ranges(), (Tensors{{28, 4}, {26, 2}, {21, 5}, {14, 7}, {13, 1}, {3, 10}, {0, 3}}));
  GradientBuckets all(tensors, int64_t{25} << 20);
  EXPECT_EQ(all.ranges(), (Tensors{{0, 32}}));
  // Gaps between tensors (alignment) go with the bucket that spans them.
  GradientBuckets gaps(Tensors{{0, 2}, {4, 2}, {8, 2}}, 3 * sizeof(float));
  EXPECT_EQ(gaps.ranges(), (Tensors{{4, 6}, {0, 2}}));
  EXPECT_EQ(GradientBuckets(Tensors{}, 100).n_buckets(), 0);
}

TEST(GradientBuckets, RejectTensorsOutOfArenaOrder) {
  EXPECT_THROW(GradientBuckets(Tensors{{0, 4}, {2, 4}}, 64), bfm::Error);  // overlap
  EXPECT_THROW(GradientBuckets(Tensors{{8, 4}, {0, 4}}, 64), bfm::Error);  // unsorted
  EXPECT_THROW(GradientBuckets(Tensors{{0, -1}}, 64), bfm::Error);
  EXPECT_THROW(GradientBuckets(Tensors{{0, 4}}, 0), bfm::Error);
}

// An arena of 53 tensors of uneven sizes (about 80k floats), in buckets of 16 KB.
Tensors test_arena() {
  std::vector<int64_t> sizes;
  for (int64_t k = 0; k < 53; ++k) sizes.push_back((k * 7919) % 3001 + (k % 5 == 0 ? 0 : 1));
  return contiguous(sizes);
}
int64_t arena_size(const Tensors& t) { return t.back().first + t.back().second; }

enum class ReadyOrder { kReverse, kRandomPerRank, kHalfThenFinish, kNone };

std::vector<float> bucketed_step(Communicator& comm, const Tensors& tensors, GradientBuckets& buckets,
                                 ReadyOrder order, float scale) {
  std::vector<float> grads = filled(arena_size(tensors), wavy, rank_);
  std::vector<size_t> ready(tensors.size());
  std::iota(ready.rbegin(), ready.rend(), size_t{0});
  if (order == ReadyOrder::kRandomPerRank) {
    std::mt19937 rng(1234u + 77u * static_cast<unsigned>(rank_));  // a different order on every rank
    std::shuffle(ready.begin(), ready.end(), rng);
  }
  if (order == ReadyOrder::kHalfThenFinish) ready.resize(ready.size() / 2);
  if (order == ReadyOrder::kNone) ready.clear();
  buckets.begin_step(grads.data(), comm);
  for (size_t t : ready) buckets.tensor_ready(t);
  buckets.finish(scale);
  return grads;
}

TEST(GradientBuckets, GiveTheArenaOfOneAllreduceInAnyReadyOrder) {
  auto comm = world_comm();
  const Tensors tensors = test_arena();
  const int64_t n = arena_size(tensors);
  const float scale = 1.0f / static_cast<float>(ranks_);
  // The reference: one all-reduce of the whole arena, then the same scaling.
  std::vector<float> whole = filled(n, wavy, rank_);
  comm->allreduce_sum(whole.data(), n);
  for (float& g : whole) g *= scale;
  GradientBuckets buckets(tensors, 16 << 10);
  ASSERT_GT(buckets.n_buckets(), 4);
  for (ReadyOrder order : {ReadyOrder::kReverse, ReadyOrder::kRandomPerRank, ReadyOrder::kHalfThenFinish,
                           ReadyOrder::kNone}) {
    const std::vector<float> grads = bucketed_step(*comm, tensors, buckets, order, scale);
    const auto want = [&](int64_t i) { return double(whole[size_t(i)]); };
    if (ranks_ <= 2) {  // a + b is one rounding, whatever the algorithm
      EXPECT_TRUE(all_equal(grads.data(), n, want)) << "order " << int(order);
    } else {  // the whole arena and a bucket may be summed in different orders
      EXPECT_TRUE(all_near(grads.data(), n, want, [&](int64_t i) { return 1e-6 * scale * abs_sum_over_ranks(wavy, i); }))
          << "order " << int(order);
    }
    // And against the sum in double.
    EXPECT_TRUE(all_near(
        grads.data(), n, [&](int64_t i) { return sum_over_ranks(wavy, i) * scale; },
        [&](int64_t i) { return 2 * scale * sum_tolerance(wavy, i); }))
        << "order " << int(order);
    EXPECT_GE(buckets.hidden_fraction(), 0.0);
    EXPECT_LE(buckets.hidden_fraction(), 1.0);
  }
  // Every bucket started by finish(): nothing hidden.
  EXPECT_EQ(buckets.hidden_fraction(), 0.0);
}

TEST(GradientBuckets, HiddenFractionCountsTheTimeBeforeFinish) {
  auto comm = world_comm();
  const Tensors tensors = test_arena();
  GradientBuckets buckets(tensors, 16 << 10);
  std::vector<float> grads = filled(arena_size(tensors), wavy, rank_);
  buckets.begin_step(grads.data(), *comm);
  for (size_t t = tensors.size(); t-- > 0;) buckets.tensor_ready(t);
  std::this_thread::sleep_for(std::chrono::milliseconds(40));  // backward's remaining work
  buckets.finish(1.0f);
  // Each bucket ran at least 40 ms before finish(); finish() itself waits for a few small all-reduces.
  EXPECT_GT(buckets.hidden_fraction(), 0.3) << "exposed " << buckets.exposed_seconds() << " s";
  EXPECT_LE(buckets.hidden_fraction(), 1.0);
}

TEST(GradientBuckets, RejectMisuse) {
  auto comm = world_comm();
  const Tensors tensors = contiguous({4, 4, 4});
  GradientBuckets buckets(tensors, 4 * sizeof(float));
  std::vector<float> grads(12, 1.0f);
  EXPECT_THROW(buckets.tensor_ready(0), bfm::Error);  // no step
  EXPECT_THROW(buckets.finish(1.0f), bfm::Error);
  buckets.begin_step(grads.data(), *comm);
  EXPECT_THROW(buckets.begin_step(grads.data(), *comm), bfm::Error);
  buckets.tensor_ready(2);
  EXPECT_THROW(buckets.tensor_ready(2), bfm::Error);
  EXPECT_THROW(buckets.tensor_ready(3), bfm::Error);
  buckets.finish(1.0f);  // the local errors above leave the step consistent on every rank
  for (float g : grads) EXPECT_EQ(g, static_cast<float>(ranks_));
}

// --- nccl: device buffers, one GPU per rank

#ifdef BFM_WITH_NCCL
class DeviceFloats {
 public:
  explicit DeviceFloats(int64_t n) : n_(n) {
    if (cudaMalloc(&p_, sizeof(float) * static_cast<size_t>(std::max<int64_t>(n, 1))) != cudaSuccess)
      bfm::fail("cudaMalloc of ", n, " floats failed");
  }
  ~DeviceFloats() { cudaFree(p_); }
  DeviceFloats(const DeviceFloats&) = delete;
  DeviceFloats& operator=(const DeviceFloats&) = delete;
  float* get() { return p_; }
  void upload(const std::vector<float>& v) {
    cudaMemcpy(p_, v.data(), sizeof(float) * v.size(), cudaMemcpyHostToDevice);
  }
  std::vector<float> download() const {
    std::vector<float> v(static_cast<size_t>(n_));
    cudaMemcpy(v.data(), p_, sizeof(float) * v.size(), cudaMemcpyDeviceToHost);
    return v;
  }

 private:
  float* p_ = nullptr;
  int64_t n_;
};

TEST(NcclCommunicator, CollectivesOnDeviceBuffers) {
  const int gpus = cuda_device_count();
  if (gpus < ranks_)
    GTEST_SKIP() << "the nccl communicator needs one GPU per rank: " << gpus << " GPU(s) for " << ranks_
                 << " rank(s) on this machine";
  ASSERT_EQ(cudaSetDevice(rank_), cudaSuccess);
  auto comm = make_nccl_communicator(world_comm());
  EXPECT_STREQ(comm->backend(), "nccl");
  EXPECT_EQ(comm->rank(), rank_);
  EXPECT_EQ(comm->size(), ranks_);
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{13}, int64_t{65537}}) {
    DeviceFloats data(n);
    data.upload(filled(n, small_int, rank_));
    comm->allreduce_sum(data.get(), n);
    EXPECT_TRUE(all_equal(data.download().data(), n, [](int64_t i) { return sum_over_ranks(small_int, i); }))
        << "allreduce, n " << n;

    DeviceFloats gathered(ranks_ * n);
    data.upload(filled(n, wavy, rank_));
    comm->allgather(data.get(), gathered.get(), n);
    EXPECT_TRUE(all_equal(gathered.download().data(), ranks_ * n, [n](int64_t j) { return wavy(int(j / n), j % n); }))
        << "allgather, n " << n;

    DeviceFloats all(ranks_ * n), mine(n);
    all.upload(filled(ranks_ * n, small_int, rank_));
    comm->reduce_scatter_sum(all.get(), mine.get(), n);
    EXPECT_TRUE(all_equal(mine.download().data(), n, [n](int64_t i) { return sum_over_ranks(small_int, rank_ * n + i); }))
        << "reduce_scatter, n " << n;

    const int root = ranks_ - 1;
    data.upload(rank_ == root ? filled(n, wavy, root) : std::vector<float>(static_cast<size_t>(n), -7));
    comm->broadcast(data.get(), n, root);
    EXPECT_TRUE(all_equal(data.download().data(), n, [root](int64_t i) { return wavy(root, i); }))
        << "broadcast, n " << n;
  }
  std::vector<double> host = {1.0 + rank_, -double(rank_)};
  comm->allreduce_sum_host(host.data(), 1);
  comm->allreduce_max_host(host.data() + 1, 1);
  EXPECT_EQ(host[0], ranks_ + ranks_ * (ranks_ - 1) / 2.0);
  EXPECT_EQ(host[1], 0.0);

  // Buckets on a device arena (scale 1: the caller folds 1/size into the optimizer) against one all-reduce.
  const Tensors tensors = test_arena();
  const int64_t n = arena_size(tensors);
  DeviceFloats arena(n);
  arena.upload(filled(n, wavy, rank_));
  GradientBuckets buckets(tensors, 16 << 10);
  buckets.begin_step(arena.get(), *comm);
  for (size_t t = tensors.size(); t-- > 0;) buckets.tensor_ready(t);
  buckets.finish(1.0f);
  EXPECT_TRUE(all_near(
      arena.download().data(), n, [](int64_t i) { return sum_over_ranks(wavy, i); },
      [](int64_t i) { return sum_tolerance(wavy, i); }));
  buckets.begin_step(arena.get(), *comm);
  EXPECT_THROW(buckets.finish(0.5f), bfm::Error);
  EXPECT_THROW(comm->wait(12345), bfm::Error);
  comm->barrier();
  EXPECT_STREQ(make_communicator("auto", true)->backend(), "nccl");
}

// The abort path: a device wait that does not finish within the collective timeout aborts the NCCL communicator
// (ncclCommAbort) and throws CollectiveTimeout naming the wait and the context, so that a rank whose peer is gone
// reports and exits instead of waiting on the device forever; the aborted communicator refuses further work. One
// GPU cannot hold two NCCL ranks, so the stall is made on this rank: the producer stream (whose work every started
// all-reduce waits for) is held by a host function that a second thread lets go after 2 s. ncclCommAbort frees the
// communicator's device memory, which waits for the work already on the device (on the H200 it returned when the
// held stream was let go, not at the timeout): an NCCL kernel that waits for a gone peer is ended by the abort
// itself, but other work held up on the device holds the abort up too. So the wait throws after the stall ends.
TEST(NcclCommunicator, AWaitPastTheTimeoutAbortsAndThrows) {
  if (cuda_device_count() < 1) GTEST_SKIP() << "needs a GPU";
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  auto comm = make_nccl_communicator(make_self_communicator());
  comm->set_timeout(0.3);
  comm->set_context("test step 7");
  cudaStream_t producer = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&producer, cudaStreamNonBlocking), cudaSuccess);
  struct Gate {
    std::atomic<bool> open{false};
  };
  auto* gate = new Gate;
  ASSERT_EQ(cudaLaunchHostFunc(
                producer,
                [](void* p) {
                  auto* g = static_cast<Gate*>(p);
                  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(8);
                  while (!g->open.load() && std::chrono::steady_clock::now() < until)
                    std::this_thread::sleep_for(std::chrono::milliseconds(5));
                },
                gate),
            cudaSuccess);
  std::thread opener([gate] {
    std::this_thread::sleep_for(std::chrono::seconds(2));
    gate->open = true;
  });
  comm->set_producer_stream(producer);
  DeviceFloats data(4096);
  data.upload(filled(4096, small_int, 0));
  const int64_t handle = comm->start_allreduce_sum(data.get(), 4096);
  const auto t0 = std::chrono::steady_clock::now();
  std::string report;
  try {
    comm->wait(handle);
  } catch (const CollectiveTimeout& e) {
    report = e.what();
  }
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(report.find("collective timeout"), std::string::npos) << report;
  EXPECT_NE(report.find("test step 7"), std::string::npos) << report;
  EXPECT_GE(waited, 0.3);
  EXPECT_LT(waited, 6.0) << "the wait did not end when the stall did";
  opener.join();
  // The aborted communicator refuses further work with an error instead of waiting.
  EXPECT_THROW(comm->allreduce_sum(data.get(), 4096), bfm::Error);
  EXPECT_EQ(cudaStreamSynchronize(producer), cudaSuccess);
  cudaStreamDestroy(producer);
  delete gate;
  comm.reset();
  std::printf("nccl abort: wait threw after %.2f s (timeout 0.3 s): %s\n", waited, report.c_str());
}
#endif

}  // namespace

int main(int argc, char** argv) {
  rank_ = bfm::runtime::world().rank;
  ranks_ = bfm::runtime::world().size;
  return bfm::test::run_mpi_tests(argc, argv);
}
