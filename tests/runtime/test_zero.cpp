// ZeRO-1 (runtime/zero.h) on real ranks: one program, its own main, run under mpirun -np 1, 2 and 4 (a plain run
// where the build has no MPI). The reference is the data-parallel path the trainer takes without ZeRO, computed on
// every rank: the communicator's all-reduce of the gradient sum, the scale 1/R, then runtime::AdamW::step over the
// whole arena with full moments. ShardedAdamW must give the same parameters and, over its shard, the same moments:
// bit for bit with one or two ranks (a + b rounds once whatever the order), within 1e-6 relative with four (the
// reduce-scatter may add the ranks in another order than the all-reduce). Each rank's gradient comes from a formula
// of (rank, step, element), with only exactly rounded operations so that every rank regenerates the same floats.
// Only rank 0 prints; a failure on any rank fails the program.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <tuple>
#include <vector>

#include "../common/mpi_test_main.h"
#include "runtime/comm.h"
#include "base/error.h"
#include "runtime/optimizer.h"
#include "runtime/world.h"
#include "runtime/zero.h"

namespace {

using namespace bfm::runtime;

int rank_ = 0, ranks_ = 1;

std::unique_ptr<Communicator> world_comm() {
#ifdef BFM_WITH_MPI
  return make_mpi_communicator(MPI_COMM_WORLD);
#else
  return make_self_communicator();
#endif
}

// A fraction in [0, 1) from a hash of (a, b, c).
double unit(int64_t a, int64_t b, int64_t c) {
  const int64_t hash = (a * 2654435761LL + b * 40503LL + c * 97LL + 12345) % 1000003;
  return static_cast<double>(hash) / 1000003.0;
}

// ~10,000 floats: seven segments of odd sizes, four with weight decay, gaps between some of them and at the end
// (floats no segment covers: AdamW leaves them alone, and so must the shards).
constexpr int64_t kArena = 10003;
const std::vector<ArenaSegment> kSegments = {{0, 1537, true},     {1537, 3, false}, {1545, 2999, true},
                                             {4544, 17, false},   {4561, 4001, true}, {8570, 1, false},
                                             {8571, 1431, true}};

// Parameters of magnitude [0.5, 1.5), signs mixed: the relative tolerance never divides by a near-zero value.
std::vector<float> initial_params(int64_t n) {
  std::vector<float> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>((0.5 + unit(i, 7, 3)) * (i % 3 == 0 ? -1.0 : 1.0));
  return p;
}

// Rank r's gradient at step s: the same sign on every rank (sums never cancel, so the order of adding ranks only
// moves the last bit), magnitudes 0.01 * [0.5, 1.5) * step_scale[s]; the mean's norm over the big arena is about
// 1.04 * step_scale[s], so a clip at 1 triggers on steps 1 and 3 (0-based) and not on 0, 2, 4.
constexpr double kStepScale[] = {0.3, 2.5, 0.5, 4.0, 0.8};
constexpr double kLr[] = {1e-3, 2e-3, 1.5e-3, 5e-4, 3e-3};
std::vector<float> gradient(int r, int s, int64_t n) {
  std::vector<float> g(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    g[i] = static_cast<float>(0.01 * kStepScale[s % 5] * (0.5 + unit(i, r + 1, s + 11)) * (i % 5 < 2 ? -1.0 : 1.0));
  return g;
}

AdamWConfig test_config() {
  AdamWConfig c;
  c.weight_decay = 0.1;
  c.grad_clip = 1.0;
  return c;
}

// The reference step: all-reduce of the gradient sum, the mean, the plain AdamW over the whole arena.
double reference_step(Communicator& comm, AdamW& opt, float* params, std::vector<float> g, double lr) {
  comm.allreduce_sum(g.data(), static_cast<int64_t>(g.size()));
  const float scale = 1.0f / static_cast<float>(comm.size());
  for (float& x : g) x *= scale;
  const double norm = opt.grad_norm(g.data());
  if (std::isfinite(norm)) opt.step(params, g.data(), lr);
  return norm;
}

struct Diff {
  double max_rel = 0;  // max |got - want| / |want|
  int64_t differ = 0;  // elements whose bits differ
  int64_t bad = 0;     // elements beyond the tolerance
  int64_t first_bad = -1;
};
// want == 0 (moments of floats outside the segments) needs got == 0.
Diff compare(const float* got, const float* want, int64_t n, double rel_tol) {
  Diff d;
  for (int64_t i = 0; i < n; ++i) {
    if (got[i] == want[i]) continue;
    ++d.differ;
    const double rel = std::abs(double(got[i]) - double(want[i])) / std::abs(double(want[i]));
    d.max_rel = std::max(d.max_rel, std::isnan(rel) ? INFINITY : rel);
    if (!(rel <= rel_tol) && d.bad++ == 0) d.first_bad = i;
  }
  return d;
}
// Bit for bit where the ranks' sums round once whatever their order (one or two ranks), 1e-6 relative otherwise.
double tolerance(int ranks) { return ranks <= 2 ? 0.0 : 1e-6; }

::testing::AssertionResult within(const Diff& d, const char* what, int64_t offset, double tol) {
  if (d.bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << d.bad << " elements beyond " << tol << " relative on rank "
                                       << rank_ << " of " << ranks_ << ", first at arena element "
                                       << offset + d.first_bad << " (max relative difference " << d.max_rel << ")";
}

// Runs `steps` steps of both on `comm` and checks parameters, norms and the shard's moments after each. Returns the
// largest differences seen (params, moments), for the report.
std::pair<Diff, Diff> run_against_reference(Communicator& comm, int64_t arena, const std::vector<ArenaSegment>& segs,
                                            int steps, int* clipped = nullptr) {
  const double tol = tolerance(comm.size());
  AdamW ref(arena, segs, test_config());
  ShardedAdamW zero(arena, segs, test_config(), comm);
  std::vector<float> ref_params = initial_params(arena), params = ref_params;
  Diff worst_p, worst_m;
  const float scale = 1.0f / static_cast<float>(comm.size());
  for (int s = 0; s < steps; ++s) {
    const double want_norm = reference_step(comm, ref, ref_params.data(), gradient(comm.rank(), s, arena), kLr[s % 5]);
    std::vector<float> g = gradient(comm.rank(), s, arena);
    const double norm = zero.step(params.data(), g.data(), scale, kLr[s % 5]);
    if (clipped && want_norm > test_config().grad_clip) ++*clipped;
    EXPECT_NEAR(norm, want_norm, 1e-6 * want_norm) << "step " << s << ", arena " << arena << ", rank " << rank_;
    EXPECT_EQ(zero.steps_taken(), ref.steps_taken());

    const Diff p = compare(params.data(), ref_params.data(), arena, tol);
    EXPECT_TRUE(within(p, "parameters", 0, tol)) << "step " << s << ", arena " << arena;
    const int64_t b = zero.shard_begin(), n = zero.shard_end() - zero.shard_begin();
    const Diff m = compare(zero.first_moment().data(), ref.first_moment().data() + b, n, tol);
    const Diff v = compare(zero.second_moment().data(), ref.second_moment().data() + b, n, tol);
    EXPECT_TRUE(within(m, "first moment", b, tol)) << "step " << s << ", arena " << arena;
    EXPECT_TRUE(within(v, "second moment", b, tol)) << "step " << s << ", arena " << arena;
    worst_p.max_rel = std::max(worst_p.max_rel, p.max_rel);
    worst_p.differ = std::max(worst_p.differ, p.differ);
    worst_m.max_rel = std::max({worst_m.max_rel, m.max_rel, v.max_rel});
    worst_m.differ = std::max({worst_m.differ, m.differ, v.differ});
  }
  return {worst_p, worst_m};
}

// The ranks' ranges, gathered: (begin, end) of rank r at [2 r], [2 r + 1].
std::vector<double> all_shards(Communicator& comm, const ShardedAdamW& zero) {
  std::vector<double> shards(2 * static_cast<size_t>(comm.size()), 0.0);
  shards[2 * comm.rank()] = static_cast<double>(zero.shard_begin());
  shards[2 * comm.rank() + 1] = static_cast<double>(zero.shard_end());
  comm.allreduce_sum_host(shards.data(), static_cast<int64_t>(shards.size()));
  return shards;
}

TEST(ShardedAdamW, EqualsAllReduceThenAdamW) {
  auto comm = world_comm();
  int clipped = 0;
  const auto [p, m] = run_against_reference(*comm, kArena, kSegments, 5, &clipped);
  EXPECT_GT(clipped, 0) << "the test means clipping to trigger on some steps";
  EXPECT_LT(clipped, 5) << "and not on others";
  if (rank_ == 0)
    std::printf("[ zero     ] %d ranks, arena %lld, 5 steps (%d clipped): parameters differ in %lld elements (max "
                "relative %.3g), moments in %lld (max relative %.3g) on rank 0\n",
                ranks_, static_cast<long long>(kArena), clipped, static_cast<long long>(p.differ), p.max_rel,
                static_cast<long long>(m.differ), m.max_rel);
}

TEST(ShardedAdamW, SmallAndRoundArenasToo) {
  // The tail path (arena not R * chunk), chunks that are not multiples of 16 (arena < 16 R), empty shards (arena < R)
  // and an arena of exactly R * 16 k.
  auto comm = world_comm();
  const int64_t R = comm->size();
  for (int64_t arena : {int64_t{1}, int64_t{3}, int64_t{5}, int64_t{37}, 16 * R, 64 * R, 64 * R + 15, 16 * R * 9 + 7}) {
    const std::vector<ArenaSegment> segs = {{0, (arena + 1) / 2, true}, {(arena + 1) / 2, arena / 2, false}};
    run_against_reference(*comm, arena, segs, 3);
  }
}

TEST(ShardedAdamW, ShardsTileTheArenaInRankOrder) {
  auto comm = world_comm();
  const int R = comm->size();
  for (int64_t arena : {kArena, int64_t{0}, int64_t{3}, int64_t{5}, int64_t{16} * R, int64_t{1} << 20}) {
    ShardedAdamW zero(arena, {{0, arena, true}}, test_config(), *comm);
    const std::vector<double> s = all_shards(*comm, zero);
    EXPECT_EQ(s[0], 0.0) << "arena " << arena;
    EXPECT_EQ(s[2 * R - 1], static_cast<double>(arena)) << "arena " << arena;
    const double chunk = s[1] - s[0];
    for (int r = 0; r < R; ++r) {
      if (r > 0) {
        EXPECT_EQ(s[2 * r], s[2 * r - 1]) << "rank " << r << " does not start where rank " << r - 1 << " ends";
      }
      EXPECT_LE(s[2 * r], s[2 * r + 1]);
      if (r + 1 < R) {
        EXPECT_EQ(s[2 * r + 1] - s[2 * r], chunk) << "arena " << arena << ": shards before the last differ in size";
        if (arena >= 16 * R) {
          EXPECT_EQ(std::fmod(chunk, 16.0), 0.0) << "arena " << arena << ": chunk " << chunk;
        }
      }
    }
    EXPECT_LT(s[2 * R - 1] - s[2 * R - 2] - chunk, 16.0 * R) << "arena " << arena << ": the last shard's tail";
    EXPECT_EQ(static_cast<int64_t>(zero.first_moment().size()), zero.shard_end() - zero.shard_begin());
    EXPECT_EQ(static_cast<int64_t>(zero.second_moment().size()), zero.shard_end() - zero.shard_begin());
  }
}

TEST(ShardedAdamW, NonFiniteGradientOnOneRankSkipsTheStepEverywhere) {
  auto comm = world_comm();
  AdamW ref(kArena, kSegments, test_config());
  ShardedAdamW zero(kArena, kSegments, test_config(), *comm);
  std::vector<float> ref_params = initial_params(kArena), params = ref_params;
  const float scale = 1.0f / static_cast<float>(comm->size());
  for (int s = 0; s < 2; ++s) {
    reference_step(*comm, ref, ref_params.data(), gradient(rank_, s, kArena), kLr[s]);
    std::vector<float> g = gradient(rank_, s, kArena);
    zero.step(params.data(), g.data(), scale, kLr[s]);
  }
  // A NaN on the last rank only (in the last segment: the last rank's own shard), then an infinity on rank 0 only
  // (in the first segment: rank 0's shard, or another rank's when there are several).
  for (const auto& [bad_rank, at, value] : {std::tuple{ranks_ - 1, kArena - 2, std::nanf("")},
                                            std::tuple{0, int64_t{5}, std::numeric_limits<float>::infinity()}}) {
    const std::vector<float> params_before = params, m_before = zero.first_moment(), v_before = zero.second_moment();
    std::vector<float> g = gradient(rank_, 7, kArena);
    if (rank_ == bad_rank) g[at] = value;
    const double norm = zero.step(params.data(), g.data(), scale, 1e-3);
    EXPECT_FALSE(std::isfinite(norm)) << "rank " << rank_ << ": bad value on rank " << bad_rank;
    EXPECT_EQ(zero.steps_taken(), 2);
    EXPECT_EQ(params, params_before) << "rank " << rank_ << ": parameters changed by a skipped step";
    EXPECT_EQ(zero.first_moment(), m_before);
    EXPECT_EQ(zero.second_moment(), v_before);
  }
  // And the next good step continues as the reference that never took the bad ones.
  const double tol = tolerance(comm->size());
  reference_step(*comm, ref, ref_params.data(), gradient(rank_, 2, kArena), kLr[2]);
  std::vector<float> g = gradient(rank_, 2, kArena);
  zero.step(params.data(), g.data(), scale, kLr[2]);
  EXPECT_EQ(zero.steps_taken(), 3);
  EXPECT_TRUE(within(compare(params.data(), ref_params.data(), kArena, tol), "parameters after a skip", 0, tol));
}

TEST(ShardedAdamW, MomentsAndStepCountRoundTrip) {
  // What a resume does: a new optimizer given the shard's moments and the step count continues exactly as the old.
  auto comm = world_comm();
  const float scale = 1.0f / static_cast<float>(comm->size());
  ShardedAdamW first(kArena, kSegments, test_config(), *comm);
  std::vector<float> params = initial_params(kArena);
  for (int s = 0; s < 3; ++s) {
    std::vector<float> g = gradient(rank_, s, kArena);
    first.step(params.data(), g.data(), scale, kLr[s]);
  }
  ShardedAdamW resumed(kArena, kSegments, test_config(), *comm), forgot_step(kArena, kSegments, test_config(), *comm);
  for (ShardedAdamW* o : {&resumed, &forgot_step}) {
    ASSERT_EQ(o->shard_begin(), first.shard_begin());
    ASSERT_EQ(o->shard_end(), first.shard_end());
    o->first_moment() = first.first_moment();
    o->second_moment() = first.second_moment();
  }
  resumed.set_steps_taken(first.steps_taken());
  EXPECT_EQ(resumed.steps_taken(), 3);
  std::vector<float> p_first = params, p_resumed = params, p_forgot = params;
  for (int s = 3; s < 5; ++s) {
    std::vector<float> g1 = gradient(rank_, s, kArena), g2 = g1, g3 = g1;
    first.step(p_first.data(), g1.data(), scale, kLr[s]);
    resumed.step(p_resumed.data(), g2.data(), scale, kLr[s]);
    forgot_step.step(p_forgot.data(), g3.data(), scale, kLr[s]);
  }
  EXPECT_EQ(p_resumed, p_first);
  EXPECT_EQ(resumed.first_moment(), first.first_moment());
  EXPECT_EQ(resumed.second_moment(), first.second_moment());
  EXPECT_EQ(resumed.steps_taken(), 5);
  EXPECT_NE(p_forgot, p_first) << "the bias corrections must depend on the restored step count";
}

TEST(ShardedAdamW, SelfCommunicatorIsPlainAdamW) {
  // A world of one (every process on its own): one shard, the whole arena, bit for bit AdamW on the scaled gradient.
  auto self = make_self_communicator();
  ShardedAdamW zero(kArena, kSegments, test_config(), *self);
  AdamW ref(kArena, kSegments, test_config());
  EXPECT_EQ(zero.shard_begin(), 0);
  EXPECT_EQ(zero.shard_end(), kArena);
  std::vector<float> ref_params = initial_params(kArena), params = ref_params;
  for (int s = 0; s < 5; ++s) {
    std::vector<float> g = gradient(rank_, s, kArena), want = g;
    for (float& x : want) x *= 0.5f;
    const double want_norm = ref.grad_norm(want.data());
    ref.step(ref_params.data(), want.data(), kLr[s]);
    EXPECT_DOUBLE_EQ(zero.step(params.data(), g.data(), 0.5f, kLr[s]), want_norm);
    ASSERT_EQ(params, ref_params) << "step " << s;
    ASSERT_EQ(zero.first_moment(), ref.first_moment()) << "step " << s;
    ASSERT_EQ(zero.second_moment(), ref.second_moment()) << "step " << s;
  }
}

TEST(ShardedAdamW, SegmentOutsideTheArenaIsAnError) {
  auto self = make_self_communicator();
  EXPECT_THROW(ShardedAdamW(100, {{90, 11, true}}, test_config(), *self), bfm::Error);
  EXPECT_THROW(ShardedAdamW(-1, {}, test_config(), *self), bfm::Error);
}

}  // namespace

int main(int argc, char** argv) {
  rank_ = bfm::runtime::world().rank;
  ranks_ = bfm::runtime::world().size;
  return bfm::test::run_mpi_tests(argc, argv);
}
