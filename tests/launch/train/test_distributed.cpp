// Data-parallel pre-training with real ranks (run under mpirun -np 1, 2 and 4): R ranks on a global batch give the
// parameters of one rank on the same global batch (to float rounding), gradient accumulation likewise; a run
// stopped at step k and resumed from its checkpoint equals the uninterrupted run bit for bit; a resume on another
// number of ranks continues (tests/launch/cli/test_cli.py, with real signals and mpirun); non-finite batches are
// skipped, counted, and stop the run after max_bad_steps.
// The one-rank reference runs inside the same program with train.comm = "self".
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "../../common/mpi_test_main.h"
#include "launch/train/run_config.h"
#include "launch/train/pretrain.h"
#include "runtime/world.h"

#ifdef BFM_WITH_MPI
#include <mpi.h>
#endif

namespace {

using bfm::launch::TrainOptions;

namespace fs = std::filesystem;

int rank() { return bfm::runtime::world().rank; }
int ranks() { return bfm::runtime::world().size; }

bfm::launch::RunConfig run_config(const std::vector<std::string>& extra) {
  std::vector<std::string> o = {
      "model.n_parcels=12", "model.window=16", "model.patch_len=4", "model.d_model=16", "model.n_heads=2",
      "model.n_layers=2", "model.decoder.d_model=16", "model.decoder.n_layers=1", "model.decoder.n_heads=2",
      "model.stim_dim=4", "model.proj_dim=8", "model.mask_ratio=0.5", "train.steps=6", "train.batch_size=8",
      "train.warmup_steps=2", "train.lr=3e-3", "train.device=\"cpu\"", "train.validate_every=3",
      "train.checkpoint_every=0", "train.log_every=100"};
  o.insert(o.end(), extra.begin(), extra.end());
  return bfm::launch::load_run_config("", o);
}

// A silent run of run_config(extra), no checkpoints.
bfm::launch::TrainResult train(const std::vector<std::string>& extra) {
  return bfm::launch::pretrain(run_config(extra), TrainOptions::quiet());
}

std::vector<float> params_of(const bfm::launch::TrainResult& r) {
  return r.model->params_copy();
}

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 1e-300;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

// A folder shared by all ranks, fresh for each test (rank 0 makes it, everyone waits).
[[maybe_unused]] std::string shared_dir(const std::string& name) {
  const std::string dir = (fs::temp_directory_path() / ("bfm_dist_" + name + "_" + std::to_string(ranks()))).string();
  if (rank() == 0) {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
#ifdef BFM_WITH_MPI
  MPI_Barrier(MPI_COMM_WORLD);
#endif
  return dir;
}

class Objectives : public ::testing::TestWithParam<const char*> {};

TEST_P(Objectives, RanksMatchOneRankOnTheGlobalBatch) {
  const std::string objectives = GetParam();
  const auto dist = train({"model.objectives=" + objectives});
  const auto one =
      train({"model.objectives=" + objectives, "train.comm=\"self\""});
  EXPECT_LT(rel_diff(params_of(dist), params_of(one)), 2e-5) << ranks() << " ranks against 1";
  ASSERT_TRUE(dist.last.total && one.last.total);
  EXPECT_NEAR(*dist.last.total, *one.last.total, 1e-5 * std::abs(*one.last.total));
}

TEST_P(Objectives, AccumulationMatchesOneBigBatch) {
  const std::string objectives = GetParam();
  const auto acc = train({"model.objectives=" + objectives, "train.comm=\"self\"", "train.micro_batch=2"});
  const auto big =
      train({"model.objectives=" + objectives, "train.comm=\"self\""});
  EXPECT_LT(rel_diff(params_of(acc), params_of(big)), 2e-5) << "4 micro-batches of 2 against one batch of 8";
}

INSTANTIATE_TEST_SUITE_P(Mae, Objectives, ::testing::Values("[\"mae\"]"));
INSTANTIATE_TEST_SUITE_P(Causal, Objectives, ::testing::Values("[\"causal\"]"));

// The contrastive loss takes its negatives from the micro-batches of all ranks together (an all-gather of the
// embeddings): R ranks on a global batch equal one rank on it. (Accumulation changes the negatives: not compared.)
class Contrastive : public ::testing::TestWithParam<const char*> {};
TEST_P(Contrastive, RanksMatchOneRankOnTheGlobalBatch) {
  const std::string objectives = GetParam();
  const auto dist = train({"model.objectives=" + objectives});
  const auto one =
      train({"model.objectives=" + objectives, "train.comm=\"self\""});
  EXPECT_LT(rel_diff(params_of(dist), params_of(one)), 2e-5) << ranks() << " ranks against 1";
  ASSERT_TRUE(dist.last.contrastive && one.last.contrastive);
  EXPECT_NEAR(*dist.last.contrastive, *one.last.contrastive, 1e-5 * std::abs(*one.last.contrastive));
}
INSTANTIATE_TEST_SUITE_P(WithMae, Contrastive, ::testing::Values("[\"mae\", \"contrastive\"]"));
INSTANTIATE_TEST_SUITE_P(WithCausal, Contrastive, ::testing::Values("[\"causal\", \"contrastive\"]"));

// ZeRO-1 (AdamW's moments sharded over the ranks) trains the same parameters as the replicated optimizer.
TEST(Distributed, ShardedOptimizerMatchesReplicated) {
  const auto plain = train({"model.objectives=[\"mae\", \"contrastive\"]"});
  const auto zero = train({"model.objectives=[\"mae\", \"contrastive\"]", "train.zero=true"});
  EXPECT_LT(rel_diff(params_of(zero), params_of(plain)), 1e-6) << ranks() << " ranks";
}

#ifdef BFM_WITH_HDF5
TEST(Distributed, ShardedOptimizerStopsAndResumesBitForBit) {
  const auto rc = run_config({"model.objectives=[\"mae\"]", "train.steps=8", "train.zero=true"});
  const std::string a = shared_dir("zero_straight"), b = shared_dir("zero_stopped");
  const auto straight = bfm::launch::pretrain(rc, TrainOptions::quiet(a));
  auto stop = TrainOptions::quiet(b);
  stop.stop_before_step = 4;
  ASSERT_TRUE(bfm::launch::pretrain(rc, stop).stopped_by_signal);
  const auto resumed = bfm::launch::pretrain(rc, TrainOptions::quiet(b));
  EXPECT_EQ(resumed.steps_done, 8);
  EXPECT_TRUE(params_of(resumed) == params_of(straight)) << "resumed ZeRO run differs from the uninterrupted one";
}

TEST(Distributed, StoppedAndResumedEqualsUninterrupted) {
  const auto rc = run_config({"model.objectives=[\"mae\", \"contrastive\"]", "train.steps=8"});
  const std::string a = shared_dir("straight"), b = shared_dir("stopped");
  const auto straight = bfm::launch::pretrain(rc, TrainOptions::quiet(a));
  auto stop = TrainOptions::quiet(b);
  stop.stop_before_step = 5;
  const auto first = bfm::launch::pretrain(rc, stop);
  ASSERT_TRUE(first.stopped_by_signal);
  EXPECT_EQ(first.steps_done, 5);
  EXPECT_FALSE(first.last_checkpoint.empty());
  const auto resumed = bfm::launch::pretrain(rc, TrainOptions::quiet(b));
  EXPECT_EQ(resumed.resumed_from, first.last_checkpoint);
  EXPECT_EQ(resumed.steps_done, 8);
  EXPECT_TRUE(params_of(resumed) == params_of(straight)) << "resumed run differs from the uninterrupted one";
  ASSERT_TRUE(resumed.last.total && straight.last.total);
  EXPECT_EQ(*resumed.last.total, *straight.last.total);
}

#endif

TEST(Distributed, NonFiniteBatchesAreSkippedThenStopTheRun) {
  auto rc = run_config({"model.objectives=[\"mae\"]", "train.steps=10", "train.max_bad_steps=3"});
  auto o = TrainOptions::quiet();
  o.nan_input_steps = {2};
  const auto once = bfm::launch::pretrain(rc, o);
  EXPECT_EQ(once.skipped_steps, 1);
  EXPECT_FALSE(once.diverged);
  EXPECT_EQ(once.steps_done, 10);
  for (float p : params_of(once)) ASSERT_TRUE(std::isfinite(p));
  o.nan_input_steps = {4, 5, 6, 7};
  const auto diverged = bfm::launch::pretrain(rc, o);
  EXPECT_TRUE(diverged.diverged);
  EXPECT_EQ(diverged.skipped_steps, 3);
  EXPECT_EQ(diverged.steps_done, 7);
}

}  // namespace

int main(int argc, char** argv) { return bfm::test::run_mpi_tests(argc, argv); }
