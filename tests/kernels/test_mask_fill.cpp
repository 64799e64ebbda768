// mask_fill_forward / mask_fill_backward (the MAE decoder's input) against naive float64 loops written from
// MODEL_SPEC ("a full sequence of N tokens in index order holds z at visible positions and decoder.mask_token at
// masked ones; add decoder.parcel_embed[p] + decoder.time_embed[j]"), and central finite differences.
#include "kernels/mask_fill.h"

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

struct FillCase {
  int B, n_t, P, D, n_vis;
};

std::ostream& operator<<(std::ostream& os, const FillCase& c) {
  return os << "B" << c.B << "_nt" << c.n_t << "_P" << c.P << "_D" << c.D << "_nvis" << c.n_vis;
}

struct Params {
  std::vector<double> z, mask_token, parcel, time;
};

class MaskFillTest : public ::testing::TestWithParam<FillCase> {
 protected:
  void SetUp() override {
    const FillCase& c = GetParam();
    N = c.n_t * c.P;
    z = random_floats(static_cast<size_t>(c.B) * c.n_vis * c.D, 1);
    mask_token = random_floats(c.D, 2);
    parcel = random_floats(static_cast<size_t>(c.P) * c.D, 3);
    time = random_floats(static_cast<size_t>(c.n_t) * c.D, 4);
    dout = random_floats(static_cast<size_t>(c.B) * N * c.D, 5);
    visible_index = random_token_subsets(c.B, N, c.n_vis, 6);
  }

  // The token of sample b at position i: z[b, k] when visible_index[b, k] = i, else mask_token; plus embeddings.
  std::vector<double> reference_forward(const Params& q) const {
    const FillCase& c = GetParam();
    std::vector<double> out(static_cast<size_t>(c.B) * N * c.D);
    for (int b = 0; b < c.B; ++b)
      for (int i = 0; i < N; ++i) {
        int k_visible = -1;
        for (int k = 0; k < c.n_vis; ++k)
          if (visible_index[b * c.n_vis + k] == i) k_visible = k;
        for (int d = 0; d < c.D; ++d) {
          const double token = k_visible >= 0 ? q.z[(b * c.n_vis + k_visible) * c.D + d] : q.mask_token[d];
          out[(b * N + i) * c.D + d] = token + q.parcel[(i % c.P) * c.D + d] + q.time[(i / c.P) * c.D + d];
        }
      }
    return out;
  }
  Params params() const { return {to_double(z), to_double(mask_token), to_double(parcel), to_double(time)}; }
  void backward(std::vector<float>& dz, std::vector<float>& dmask, std::vector<float>& dparcel,
                std::vector<float>& dtime) const {
    const FillCase& c = GetParam();
    cpu::mask_fill_backward(dz.data(), dmask.data(), dparcel.data(), dtime.data(), dout.data(), visible_index.data(),
                            c.B, N, c.n_vis, c.P, c.D);
  }

  int N = 0;
  std::vector<float> z, mask_token, parcel, time, dout;
  std::vector<int32_t> visible_index;
};

TEST_P(MaskFillTest, ForwardMatchesFloat64) {
  const FillCase& c = GetParam();
  std::vector<float> out(dout.size(), 3.0f);
  cpu::mask_fill_forward(out.data(), z.data(), mask_token.data(), parcel.data(), time.data(), visible_index.data(),
                         c.B, N, c.n_vis, c.P, c.D);
  EXPECT_LT(rel_error(out, reference_forward(params())), 1e-6);
}

TEST_P(MaskFillTest, BackwardMatchesFloat64AndAddsIntoGradients) {
  const FillCase& c = GetParam();
  std::vector<double> want_z(z.size(), 0.0), want_mask(mask_token.size(), 0.0), want_parcel(parcel.size(), 0.0),
      want_time(time.size(), 0.0);
  for (int b = 0; b < c.B; ++b)
    for (int i = 0; i < N; ++i) {
      int k_visible = -1;
      for (int k = 0; k < c.n_vis; ++k)
        if (visible_index[b * c.n_vis + k] == i) k_visible = k;
      for (int d = 0; d < c.D; ++d) {
        const double g = dout[(b * N + i) * c.D + d];
        (k_visible >= 0 ? want_z[(b * c.n_vis + k_visible) * c.D + d] : want_mask[d]) += g;
        want_parcel[(i % c.P) * c.D + d] += g;
        want_time[(i / c.P) * c.D + d] += g;
      }
    }
  const std::vector<float> z0 = random_floats(z.size(), 11), mask0 = random_floats(mask_token.size(), 12),
                           parcel0 = random_floats(parcel.size(), 13), time0 = random_floats(time.size(), 14);
  std::vector<float> dz = z0, dmask = mask0, dparcel = parcel0, dtime = time0;
  backward(dz, dmask, dparcel, dtime);
  EXPECT_LT(rel_error_added(dz, z0, want_z), 1e-6);
  if (c.n_vis < N) {
    EXPECT_LT(rel_error_added(dmask, mask0, want_mask), 1e-6);
  } else {
    EXPECT_EQ(dmask, mask0);  // no masked position: nothing flows to mask_token
  }
  EXPECT_LT(rel_error_added(dparcel, parcel0, want_parcel), 1e-6);
  EXPECT_LT(rel_error_added(dtime, time0, want_time), 1e-6);
}

TEST_P(MaskFillTest, BackwardMatchesFiniteDifferences) {
  std::vector<float> dz(z.size(), 0.0f), dmask(mask_token.size(), 0.0f), dparcel(parcel.size(), 0.0f),
      dtime(time.size(), 0.0f);
  backward(dz, dmask, dparcel, dtime);
  const std::vector<double> g = to_double(dout);
  const Params base = params();
  const auto check = [&](std::vector<double> Params::*field, const std::vector<float>& got, const char* name) {
    if (got.empty()) return;
    const auto idx = sample_indices(got.size(), 40, 9);
    const auto f = [&](const std::vector<double>& v) {
      Params q = base;
      q.*field = v;
      return project(g, reference_forward(q));
    };
    const std::vector<double> want = numeric_gradient(f, base.*field, idx);
    double scale = 0.0;
    for (double x : want) scale = std::max(scale, std::abs(x));
    if (scale == 0.0) {  // mask_token with nothing masked
      EXPECT_EQ(pick(got, idx), std::vector<float>(idx.size(), 0.0f)) << name;
      return;
    }
    EXPECT_LT(rel_error(pick(got, idx), want), 1e-6) << name;
  };
  check(&Params::z, dz, "dz");
  check(&Params::mask_token, dmask, "dmask_token");
  check(&Params::parcel, dparcel, "dparcel_embed");
  check(&Params::time, dtime, "dtime_embed");
}

INSTANTIATE_TEST_SUITE_P(Cases, MaskFillTest,
                         ::testing::Values(FillCase{3, 5, 7, 70, 13}, FillCase{1, 4, 33, 130, 33},
                                           FillCase{2, 2, 3, 8, 0},  // everything masked
                                           FillCase{2, 3, 5, 9, 15}  // nothing masked
                                           ),
                         [](const ::testing::TestParamInfo<FillCase>& param_info) {
                           return ::testing::PrintToString(param_info.param);
                         });

TEST(MaskFillDeterminismTest, GradientsDoNotDependOnThreadCount) {
  const int B = 3, n_t = 6, P = 11, N = n_t * P, D = 150, n_vis = 20;
  const std::vector<float> dout = random_floats(static_cast<size_t>(B) * N * D, 1);
  const std::vector<int32_t> visible = random_token_subsets(B, N, n_vis, 2);
  std::vector<float> results[2];
  for (int k = 0; k < 2; ++k) {
    std::vector<float> dz(static_cast<size_t>(B) * n_vis * D, 0.0f), dmask(D, 0.0f), dparcel(P * D, 0.0f),
        dtime(n_t * D, 0.0f);
    with_threads(k == 0 ? 1 : 3, [&] {
      cpu::mask_fill_backward(dz.data(), dmask.data(), dparcel.data(), dtime.data(), dout.data(), visible.data(), B,
                              N, n_vis, P, D);
    });
    for (const auto* v : {&dmask, &dparcel, &dtime}) dz.insert(dz.end(), v->begin(), v->end());
    results[k] = dz;
  }
  EXPECT_EQ(results[0], results[1]);
}

TEST(MaskFillArgsTest, RejectsBadVisibleIndex) {
  const int B = 1, N = 4, P = 2, D = 2;
  std::vector<float> out(N * D), z(2 * D), mask(D), parcel(P * D), time(2 * D);
  const std::vector<int32_t> twice = {1, 1}, outside = {0, 4};
  EXPECT_THROW(cpu::mask_fill_forward(out.data(), z.data(), mask.data(), parcel.data(), time.data(), twice.data(), B,
                                      N, 2, P, D),
               bfm::Error);
  EXPECT_THROW(cpu::mask_fill_backward(z.data(), mask.data(), parcel.data(), time.data(), out.data(), outside.data(),
                                       B, N, 2, P, D),
               bfm::Error);
}

}  // namespace
