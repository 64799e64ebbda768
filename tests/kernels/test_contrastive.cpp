// contrastive_forward / contrastive_backward (CLIP loss, MODEL_SPEC "Objectives") against a float64 reference of the
// loss and of its analytic gradient, and against central finite differences in brain, stim and logit_scale.
#include "kernels/contrastive.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <vector>

#include "reference.h"
#include "base/error.h"

namespace {

using namespace bfm::test;
namespace cpu = bfm::kernels::cpu;

const float kMaxScale = static_cast<float>(std::log(100.0));
constexpr float kDloss = 0.7f;

struct ClipCase {
  int B, E;
  float logit_scale;
};

std::ostream& operator<<(std::ostream& os, const ClipCase& c) {
  return os << "B" << c.B << "_E" << c.E << (c.logit_scale > kMaxScale ? "_clamped" : "");
}

std::vector<double> normalized(const std::vector<double>& u, int B, int E, std::vector<double>* norms = nullptr) {
  std::vector<double> z(u.size());
  for (int i = 0; i < B; ++i) {
    double sq = 0.0;
    for (int e = 0; e < E; ++e) sq += u[i * E + e] * u[i * E + e];
    for (int e = 0; e < E; ++e) z[i * E + e] = u[i * E + e] / std::sqrt(sq);
    if (norms != nullptr) norms->push_back(std::sqrt(sq));
  }
  return z;
}

// logits [B, B] = exp(min(s, s_max)) zb zs^T
std::vector<double> reference_logits(const std::vector<double>& brain, const std::vector<double>& stim, double s,
                                     int B, int E) {
  const std::vector<double> zb = normalized(brain, B, E), zs = normalized(stim, B, E);
  const double scale = std::exp(std::min(s, static_cast<double>(kMaxScale)));
  std::vector<double> logits(static_cast<size_t>(B) * B, 0.0);
  for (int i = 0; i < B; ++i)
    for (int j = 0; j < B; ++j)
      for (int e = 0; e < E; ++e) logits[i * B + j] += scale * zb[i * E + e] * zs[j * E + e];
  return logits;
}

// Cross-entropy of row i against class i, averaged over rows, for logits read as at(i, j).
template <class At>
double mean_cross_entropy(At at, int B) {
  double loss = 0.0;
  for (int i = 0; i < B; ++i) {
    double sum = 0.0;
    for (int j = 0; j < B; ++j) sum += std::exp(at(i, j));
    loss += std::log(sum) - at(i, i);
  }
  return loss / B;
}

double reference_loss(const std::vector<double>& brain, const std::vector<double>& stim, double s, int B, int E) {
  const std::vector<double> l = reference_logits(brain, stim, s, B, E);
  return 0.5 * (mean_cross_entropy([&](int i, int j) { return l[i * B + j]; }, B) +
                mean_cross_entropy([&](int i, int j) { return l[j * B + i]; }, B));
}

class ContrastiveTest : public ::testing::TestWithParam<ClipCase> {
 protected:
  void SetUp() override {
    const ClipCase& c = GetParam();
    brain = random_floats(static_cast<size_t>(c.B) * c.E, 1, -2.0f, 2.0f);
    stim = random_floats(static_cast<size_t>(c.B) * c.E, 2);
    // Correlate the pairs a little so that the diagonal matters, not so much that the softmax saturates (then the
    // gradient vanishes and there is nothing to check).
    for (size_t k = 0; k < brain.size(); ++k) stim[k] += 0.1f * brain[k];
  }
  std::vector<float> brain, stim;
};

TEST_P(ContrastiveTest, ForwardMatchesFloat64) {
  const ClipCase& c = GetParam();
  const float loss = cpu::contrastive_forward(brain.data(), stim.data(), c.logit_scale, kMaxScale, c.B, c.E);
  const double want = reference_loss(to_double(brain), to_double(stim), c.logit_scale, c.B, c.E);
  EXPECT_NEAR(loss, want, 5e-6 * std::max(1.0, std::abs(want)));
}

TEST_P(ContrastiveTest, BackwardMatchesFloat64AndAddsIntoGradients) {
  const ClipCase& c = GetParam();
  const int B = c.B, E = c.E;
  // dloss/dlogits[i, j] = dloss (softmax_row_i[j] + softmax_col_j[i] - 2 delta_ij) / 2B; d logits / d s = logits
  // unless clamped; dzb = scale dlogits zs, dzs = scale dlogits^T zb; du = (dz - z (z . dz)) / |u|.
  std::vector<double> nb, ns;
  const std::vector<double> zb = normalized(to_double(brain), B, E, &nb), zs = normalized(to_double(stim), B, E, &ns);
  const std::vector<double> l = reference_logits(to_double(brain), to_double(stim), c.logit_scale, B, E);
  const double scale = std::exp(std::min(c.logit_scale, kMaxScale));
  std::vector<double> row_sum(B, 0.0), col_sum(B, 0.0);
  for (int i = 0; i < B; ++i)
    for (int j = 0; j < B; ++j) {
      row_sum[i] += std::exp(l[i * B + j]);
      col_sum[j] += std::exp(l[i * B + j]);
    }
  std::vector<double> dzb(zb.size(), 0.0), dzs(zs.size(), 0.0);
  double want_ds = 0.0;
  for (int i = 0; i < B; ++i)
    for (int j = 0; j < B; ++j) {
      const double p = std::exp(l[i * B + j]);
      const double dl = kDloss * (p / row_sum[i] + p / col_sum[j] - (i == j ? 2.0 : 0.0)) / (2.0 * B);
      want_ds += dl * l[i * B + j];
      for (int e = 0; e < E; ++e) {
        dzb[i * E + e] += scale * dl * zs[j * E + e];
        dzs[j * E + e] += scale * dl * zb[i * E + e];
      }
    }
  if (c.logit_scale > kMaxScale) want_ds = 0.0;
  const auto through_norm = [&](const std::vector<double>& z, const std::vector<double>& dz,
                                const std::vector<double>& norm) {
    std::vector<double> du(z.size());
    for (int i = 0; i < B; ++i) {
      double dot = 0.0;
      for (int e = 0; e < E; ++e) dot += z[i * E + e] * dz[i * E + e];
      for (int e = 0; e < E; ++e) du[i * E + e] = (dz[i * E + e] - z[i * E + e] * dot) / norm[i];
    }
    return du;
  };
  const std::vector<double> want_brain = through_norm(zb, dzb, nb), want_stim = through_norm(zs, dzs, ns);
  const std::vector<float> brain0 = prefill_for(want_brain, 5), stim0 = prefill_for(want_stim, 6);
  std::vector<float> dbrain = brain0, dstim = stim0;
  float dscale = 0.25f;
  cpu::contrastive_backward(dbrain.data(), dstim.data(), &dscale, brain.data(), stim.data(), c.logit_scale,
                            kMaxScale, B, E, kDloss);
  EXPECT_LT(rel_error_added(dbrain, brain0, want_brain), 1e-5);
  EXPECT_LT(rel_error_added(dstim, stim0, want_stim), 1e-5);
  if (c.logit_scale > kMaxScale)
    EXPECT_EQ(dscale, 0.25f);  // clamped: no gradient, and nothing added
  else
    EXPECT_NEAR(dscale - 0.25, want_ds, 1e-5 * std::max(1e-3, std::abs(want_ds)));
}

TEST_P(ContrastiveTest, BackwardMatchesFiniteDifferences) {
  const ClipCase& c = GetParam();
  std::vector<float> dbrain(brain.size(), 0.0f), dstim(stim.size(), 0.0f);
  float dscale = 0.0f;
  cpu::contrastive_backward(dbrain.data(), dstim.data(), &dscale, brain.data(), stim.data(), c.logit_scale,
                            kMaxScale, c.B, c.E, kDloss);
  const std::vector<double> bd = to_double(brain), sd = to_double(stim);
  const auto idx = sample_indices(brain.size(), 40, 3);
  const auto fb = [&](const std::vector<double>& v) { return kDloss * reference_loss(v, sd, c.logit_scale, c.B, c.E); };
  const auto fs = [&](const std::vector<double>& v) { return kDloss * reference_loss(bd, v, c.logit_scale, c.B, c.E); };
  EXPECT_LT(rel_error(pick(dbrain, idx), numeric_gradient(fb, bd, idx)), 2e-5);
  EXPECT_LT(rel_error(pick(dstim, idx), numeric_gradient(fs, sd, idx)), 2e-5);
  const auto fscale = [&](const std::vector<double>& v) { return kDloss * reference_loss(bd, sd, v[0], c.B, c.E); };
  const double want = numeric_gradient(fscale, {static_cast<double>(c.logit_scale)}, {0})[0];
  EXPECT_NEAR(dscale, want, 1e-5 * std::max(1e-3, std::abs(want)) + 1e-9);
}

INSTANTIATE_TEST_SUITE_P(Cases, ContrastiveTest,
                         ::testing::Values(ClipCase{5, 12, static_cast<float>(std::log(1.0 / 0.07))},
                                           ClipCase{33, 70, static_cast<float>(std::log(1.0 / 0.07))},
                                           ClipCase{3, 8, 0.5f}, ClipCase{5, 12, 5.0f}),
                         [](const ::testing::TestParamInfo<ClipCase>& param_info) {
                           return ::testing::PrintToString(param_info.param);
                         });

TEST(ContrastiveOnePairTest, LossAndGradientAreZero) {
  // One pair: the 1 x 1 softmax is certain, CE = 0 whatever the embeddings.
  const std::vector<float> brain = random_floats(6, 1), stim = random_floats(6, 2);
  EXPECT_NEAR(cpu::contrastive_forward(brain.data(), stim.data(), 2.0f, kMaxScale, 1, 6), 0.0f, 1e-7);
  std::vector<float> db(6, 0.0f), ds(6, 0.0f);
  float dscale = 0.0f;
  cpu::contrastive_backward(db.data(), ds.data(), &dscale, brain.data(), stim.data(), 2.0f, kMaxScale, 1, 6, 1.0f);
  for (int e = 0; e < 6; ++e) {
    EXPECT_NEAR(db[e], 0.0f, 1e-7);
    EXPECT_NEAR(ds[e], 0.0f, 1e-7);
  }
  EXPECT_NEAR(dscale, 0.0f, 1e-7);
}

}  // namespace
