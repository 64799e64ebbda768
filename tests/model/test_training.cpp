// 300 steps of training on generated windows lower each objective's held-out loss well below where it started.
// The thresholds are what a model that learned nothing cannot reach: predicting zero gives an MSE of about 1 on
// z-scored data, and chance for the contrastive loss is ln(B). Half the tokens are masked: at 75 % a model this
// small sits on the MAE plateau (loss about 1) for several hundred steps before it learns to use positions.
#include <gtest/gtest.h>

#include <cmath>

#include "launch/train/run_config.h"
#include "launch/train/pretrain.h"

namespace {

using bfm::launch::TrainOptions;

bfm::launch::RunConfig small_run(const std::vector<std::string>& extra) {
  std::vector<std::string> overrides = {
      "model.n_parcels=16", "model.window=32",   "model.patch_len=4",       "model.d_model=32",
      "model.n_heads=2",    "model.n_layers=2", "model.decoder.d_model=32", "model.decoder.n_layers=2",
      "model.decoder.n_heads=2", "train.steps=300", "train.batch_size=16", "train.lr=2e-3",
      "train.warmup_steps=20", "model.stim_dim=8", "model.proj_dim=16", "data.noise=0.1",
      "data.stim_gain=3", "model.mask_ratio=0.5"};
  overrides.insert(overrides.end(), extra.begin(), extra.end());
  return bfm::launch::load_run_config("", overrides);
}

TEST(ModelTraining, MaeLossFalls) {
  const auto r = bfm::launch::pretrain(small_run({"model.objectives=[\"mae\"]"}),
                                       TrainOptions::quiet());
  ASSERT_TRUE(r.first.mae && r.last.mae);
  EXPECT_EQ(r.skipped_steps, 0);
  EXPECT_LT(*r.last.mae, 0.85 * *r.first.mae) << "first " << *r.first.mae << " last " << *r.last.mae;
}

TEST(ModelTraining, CausalLossFalls) {
  const auto r = bfm::launch::pretrain(small_run({"model.objectives=[\"causal\"]"}),
                                       TrainOptions::quiet());
  ASSERT_TRUE(r.first.causal && r.last.causal);
  EXPECT_LT(*r.last.causal, 0.6 * *r.first.causal) << "first " << *r.first.causal << " last " << *r.last.causal;
}

TEST(ModelTraining, ContrastiveLossFalls) {
  const auto r = bfm::launch::pretrain(small_run({"model.objectives=[\"mae\", \"contrastive\"]"}),
                                       TrainOptions::quiet());
  ASSERT_TRUE(r.first.contrastive && r.last.contrastive && r.last.mae);
  // Chance level is ln(16) = 2.77: the model must pair windows with their stimuli well above chance.
  EXPECT_LT(*r.last.contrastive, 0.8 * std::log(16.0));
  EXPECT_LT(*r.last.contrastive, 0.6 * *r.first.contrastive)
      << "first " << *r.first.contrastive << " last " << *r.last.contrastive;
  EXPECT_LT(*r.last.mae, 0.95 * *r.first.mae);
}

TEST(ModelTraining, TubeAndFutureMasksTrain) {
  // Reconstructing half of the parcels across time from the others; forecasting the last quarter of the window
  // (2 of 8 patches, 8 time points ahead), which is harder and falls more slowly.
  struct Case {
    const char* strategy;
    const char* ratio;
    double below;
  };
  for (const auto& [strategy, ratio, below] : {Case{"tube", "0.5", 0.9}, Case{"future", "0.25", 0.98}}) {
    SCOPED_TRACE(strategy);
    auto rc = small_run({"model.objectives=[\"mae\"]", std::string("train.mask_strategy=") + strategy,
                         std::string("model.mask_ratio=") + ratio});
    const auto r = bfm::launch::pretrain(rc, TrainOptions::quiet());
    EXPECT_LT(*r.last.mae, below * *r.first.mae) << "first " << *r.first.mae << " last " << *r.last.mae;
  }
}

}  // namespace
