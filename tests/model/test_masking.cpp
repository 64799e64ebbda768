// Mask strategies: counts, structure, and that random masks cover tokens uniformly.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "model/masking.h"
#include "base/error.h"
#include "base/rng.h"

namespace {

using bfm::model::MaskStrategy;

TEST(Masking, RandomMasksTheRoundedCountPerRowAndCoversTokensUniformly) {
  const int B = 400, nt = 5, P = 7, N = 35;
  std::vector<uint8_t> mask(B * N);
  bfm::Rng rng(1);
  bfm::model::make_masks(mask.data(), B, nt, P, 0.75, MaskStrategy::random, rng);
  std::vector<int> per_token(N, 0);
  for (int b = 0; b < B; ++b) {
    int count = 0;
    for (int i = 0; i < N; ++i) count += mask[b * N + i], per_token[i] += mask[b * N + i];
    ASSERT_EQ(count, 26);  // round(0.75 * 35) = 26
  }
  // Each token masked with probability 26/35; 400 draws: a 5-sigma band.
  const double p = 26.0 / 35, sd = std::sqrt(B * p * (1 - p));
  for (int i = 0; i < N; ++i) EXPECT_NEAR(per_token[i], B * p, 5 * sd) << "token " << i;
}

TEST(Masking, TubeMasksWholeParcelsAcrossTime) {
  const int B = 20, nt = 4, P = 9, N = 36;
  std::vector<uint8_t> mask(B * N);
  bfm::Rng rng(2);
  bfm::model::make_masks(mask.data(), B, nt, P, 0.5, MaskStrategy::tube, rng);
  for (int b = 0; b < B; ++b) {
    int parcels = 0;
    for (int p = 0; p < P; ++p) {
      const int first = mask[b * N + p];
      for (int j = 1; j < nt; ++j) ASSERT_EQ(mask[b * N + j * P + p], first) << "parcel " << p << " not a tube";
      parcels += first;
    }
    EXPECT_EQ(parcels, 4);  // round(0.5 * 9) = 4 (ties to even)
  }
}

TEST(Masking, FutureMasksTheLastTimePatches) {
  const int nt = 5, P = 3, N = 15;
  std::vector<uint8_t> mask(N);
  bfm::Rng rng(3);
  bfm::model::make_masks(mask.data(), 1, nt, P, 0.4, MaskStrategy::future, rng);
  for (int i = 0; i < N; ++i) EXPECT_EQ(mask[i], i >= 9 ? 1 : 0) << i;
  // Even a ratio of 1 leaves one patch visible.
  bfm::model::make_masks(mask.data(), 1, nt, P, 1.0, MaskStrategy::future, rng);
  for (int i = 0; i < P; ++i) EXPECT_EQ(mask[i], 0);
}

TEST(Masking, VisibleIndicesAreAscendingAndRowsMustAgree) {
  const std::vector<uint8_t> mask = {1, 0, 0, 1, 0, /**/ 0, 1, 1, 0, 0};
  int n = 0;
  const auto idx = bfm::model::visible_indices(mask.data(), 2, 5, &n, "in.h5");
  ASSERT_EQ(n, 3);
  EXPECT_EQ(idx, (std::vector<int32_t>{1, 2, 4, 0, 3, 4}));
  const std::vector<uint8_t> uneven = {1, 0, 0, 1, 0, /**/ 0, 0, 1, 0, 0};
  EXPECT_THROW(bfm::model::visible_indices(uneven.data(), 2, 5, &n, "in.h5"), bfm::Error);
  const std::vector<uint8_t> all = {1, 1, 1};
  EXPECT_THROW(bfm::model::visible_indices(all.data(), 1, 3, &n, "in.h5"), bfm::Error);
  EXPECT_THROW(bfm::model::parse_mask_strategy("blocks"), bfm::Error);
}

}  // namespace
