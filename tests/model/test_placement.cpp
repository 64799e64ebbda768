// Where a model runs (model/placement.h) and what make_model returns: the one place that picks the device. The GPU
// cases run where there is a GPU (bench/gpu_check.sh); on a machine without one, asking for "cuda" must be a clear
// error naming the setting, and "auto" must stay on the CPU.
#include "model/placement.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/error.h"
#include "runtime/device.h"

namespace {

using bfm::model::ModelConfig;
using ::testing::HasSubstr;

ModelConfig config(int d_model = 16, int heads = 1) {
  ModelConfig c;
  c.n_parcels = 5, c.window = 8, c.patch_len = 4, c.d_model = d_model, c.n_heads = heads, c.n_layers = 1;
  c.causal = true;
  return c;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const bfm::Error& e) {
    return e.what();
  }
  return "";
}

TEST(Placement, CpuIsTheCpuAndAnUnknownDeviceIsNamed) {
  const auto p = bfm::model::choose_placement(config(), "cpu", bfm::model::Precision::bf16, "run.toml: train.device");
  EXPECT_FALSE(p.gpu);
  EXPECT_EQ(p.describe(), "the CPU");
  EXPECT_THAT(error_of([] {
                bfm::model::choose_placement(config(), "tpu", bfm::model::Precision::fp32, "run.toml: train.device");
              }),
              HasSubstr("run.toml: train.device is 'tpu', expected auto, cpu or cuda"));
}

TEST(Placement, WithoutAGpuAutoStaysOnTheCpuAndCudaIsAClearError) {
  if (bfm::runtime::cuda_device_count() > 0) GTEST_SKIP() << "this machine has a GPU";
  EXPECT_FALSE(bfm::model::choose_placement(config(), "auto", bfm::model::Precision::bf16, "x").gpu);
  EXPECT_THAT(error_of([] {
                bfm::model::choose_placement(config(), "cuda", bfm::model::Precision::bf16, "bfm eval --device");
              }),
              HasSubstr("bfm eval --device = \"cuda\" but this"));
}

TEST(Placement, HeadDimsTheGpuAttentionCannotTakeAreNamed) {
  EXPECT_EQ(bfm::model::cuda_unsupported(config(64, 2)), "");   // head dim 32
  EXPECT_EQ(bfm::model::cuda_unsupported(config(128, 1)), "");  // 128
  EXPECT_THAT(bfm::model::cuda_unsupported(config(48, 1)), HasSubstr("encoder head dim 48"));
  ModelConfig mae = config(64, 2);
  mae.causal = false, mae.mae = true, mae.decoder = bfm::model::DecoderConfig{24, 1, 1};
  EXPECT_THAT(bfm::model::cuda_unsupported(mae), HasSubstr("decoder head dim 24"));
}

TEST(Placement, MakeModelOnTheCpuGivesTheCpuBackEnd) {
  const auto m = bfm::model::make_model(config(), bfm::model::Placement::cpu());
  EXPECT_FALSE(m->on_gpu());
  EXPECT_EQ(m->device(), "cpu");
  m->initialize(3);
  // The parameters cross the interface in the CPU layout: what goes in comes out.
  std::vector<float> arena = m->params_copy();
  for (size_t i = 0; i < arena.size(); ++i) arena[i] = float(i) * 0.5f;
  m->load_params(arena.data());
  EXPECT_EQ(m->params_copy(), arena);
}

}  // namespace
