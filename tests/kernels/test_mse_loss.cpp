// masked_mse and next_patch_mse (MODEL_SPEC "Objectives": loss_mae over the masked tokens, loss_causal with token
// (j, p) predicting patch (j + 1, p)) against float64 loops and central finite differences.
#include "kernels/mse_loss.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "reference.h"

namespace {

using namespace bfm::test;
namespace cpu = bfm::kernels::cpu;

constexpr int kB = 3, kNt = 5, kP = 7, kN = kNt * kP, kL = 4;
constexpr float kDloss = 0.7f;

std::vector<uint8_t> random_mask(uint32_t seed) {
  std::vector<uint8_t> mask(kB * kN);
  const std::vector<float> u = random_floats(mask.size(), seed, 0.0f, 1.0f);
  for (size_t i = 0; i < mask.size(); ++i) mask[i] = u[i] < 0.4f ? 1 : 0;
  return mask;
}

double reference_masked(const std::vector<double>& pred, const std::vector<float>& target,
                        const std::vector<uint8_t>& mask) {
  double sum = 0.0;
  int count = 0;
  for (int r = 0; r < kB * kN; ++r) {
    if (!mask[r]) continue;
    ++count;
    for (int l = 0; l < kL; ++l) sum += std::pow(pred[r * kL + l] - target[r * kL + l], 2);
  }
  return sum / (count * kL);
}

double reference_next_patch(const std::vector<double>& pred, const std::vector<float>& target, int n_t) {
  double sum = 0.0;
  for (int b = 0; b < kB; ++b)
    for (int j = 0; j + 1 < n_t; ++j)
      for (int p = 0; p < kP; ++p)
        for (int l = 0; l < kL; ++l)
          sum += std::pow(pred[((b * n_t + j) * kP + p) * kL + l] - target[((b * n_t + j + 1) * kP + p) * kL + l], 2);
  return sum / (static_cast<double>(kB) * (n_t - 1) * kP * kL);
}

class MseLossTest : public ::testing::Test {
 protected:
  std::vector<float> pred = random_floats(kB * kN * kL, 1), target = random_floats(kB * kN * kL, 2);
};

TEST_F(MseLossTest, MaskedForwardMatchesFloat64) {
  const std::vector<uint8_t> mask = random_mask(3);
  const float loss = cpu::masked_mse_forward(pred.data(), target.data(), mask.data(), kB, kN, kL);
  const double want = reference_masked(to_double(pred), target, mask);
  EXPECT_LT(std::abs(loss - want), 1e-6 * want);
}

TEST_F(MseLossTest, MaskedBackwardMatchesFiniteDifferencesAndAdds) {
  const std::vector<uint8_t> mask = random_mask(3);
  const std::vector<float> d0 = random_floats(pred.size(), 4);
  std::vector<float> dpred = d0;
  cpu::masked_mse_backward(dpred.data(), pred.data(), target.data(), mask.data(), kB, kN, kL, kDloss);
  const std::vector<size_t> all = sample_indices(pred.size(), pred.size(), 0);
  std::vector<double> want = numeric_gradient(
      [&](const std::vector<double>& v) { return kDloss * reference_masked(v, target, mask); }, to_double(pred), all);
  EXPECT_LT(rel_error_added(dpred, d0, want), 1e-5);
  for (int r = 0; r < kB * kN; ++r)  // unmasked tokens get exactly nothing
    if (!mask[r]) {
      for (int l = 0; l < kL; ++l) ASSERT_EQ(dpred[r * kL + l], d0[r * kL + l]);
    }
}

TEST_F(MseLossTest, MaskedWithNothingMaskedIsZero) {
  const std::vector<uint8_t> none(kB * kN, 0);
  EXPECT_EQ(cpu::masked_mse_forward(pred.data(), target.data(), none.data(), kB, kN, kL), 0.0f);
  std::vector<float> dpred(pred.size(), 1.5f);
  cpu::masked_mse_backward(dpred.data(), pred.data(), target.data(), none.data(), kB, kN, kL, kDloss);
  EXPECT_EQ(dpred, std::vector<float>(pred.size(), 1.5f));
}

TEST_F(MseLossTest, NextPatchForwardMatchesFloat64) {
  const float loss = cpu::next_patch_mse_forward(pred.data(), target.data(), kB, kNt, kP, kL);
  const double want = reference_next_patch(to_double(pred), target, kNt);
  EXPECT_LT(std::abs(loss - want), 1e-6 * want);
}

TEST_F(MseLossTest, NextPatchBackwardMatchesFiniteDifferencesAndAdds) {
  const std::vector<float> d0 = random_floats(pred.size(), 5);
  std::vector<float> dpred = d0;
  cpu::next_patch_mse_backward(dpred.data(), pred.data(), target.data(), kB, kNt, kP, kL, kDloss);
  const std::vector<size_t> all = sample_indices(pred.size(), pred.size(), 0);
  std::vector<double> want = numeric_gradient(
      [&](const std::vector<double>& v) { return kDloss * reference_next_patch(v, target, kNt); }, to_double(pred),
      all);
  EXPECT_LT(rel_error_added(dpred, d0, want), 1e-5);
}

TEST_F(MseLossTest, NextPatchWithOneTimePatchIsZero) {
  // n_t = 1: B * P tokens, none with a successor.
  EXPECT_EQ(cpu::next_patch_mse_forward(pred.data(), target.data(), kB, 1, kP, kL), 0.0f);
  std::vector<float> dpred(kB * kP * kL, 2.5f);
  cpu::next_patch_mse_backward(dpred.data(), pred.data(), target.data(), kB, 1, kP, kL, kDloss);
  EXPECT_EQ(dpred, std::vector<float>(kB * kP * kL, 2.5f));
}

}  // namespace
