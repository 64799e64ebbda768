// patchify, patch_embed_forward and patch_embed_backward against naive float64 loops written from MODEL_SPEC
// ("token i = j * P + p holds x[j*L + l, p]"; e_i = patch_embed(x_patch_i) + parcel_embed[p] + time_embed[j]), and
// the backward against central finite differences.
#include "kernels/patch_embed.h"

#include <gtest/gtest.h>

#include <ostream>
#include <vector>

#include "reference.h"
#include "base/error.h"

namespace {

using namespace bfm::test;
namespace cpu = bfm::kernels::cpu;

TEST(PatchifyTest, TokenHoldsItsParcelsPatch) {
  const int B = 3, T = 15, P = 7, L = 5, n_t = T / L;
  const std::vector<float> x = random_floats(static_cast<size_t>(B) * T * P, 1);
  std::vector<float> patches(x.size(), -1.0f);
  cpu::patchify(patches.data(), x.data(), B, T, P, L);
  for (int b = 0; b < B; ++b)
    for (int j = 0; j < n_t; ++j)
      for (int p = 0; p < P; ++p)
        for (int l = 0; l < L; ++l)
          ASSERT_EQ(patches[((b * n_t * P) + j * P + p) * L + l], x[(b * T + j * L + l) * P + p])
              << "b=" << b << " j=" << j << " p=" << p << " l=" << l;
}

TEST(PatchifyTest, RejectsWindowNotMultipleOfPatchLen) {
  std::vector<float> x(14 * 3), patches(x.size());
  EXPECT_THROW(cpu::patchify(patches.data(), x.data(), 1, 14, 3, 5), bfm::Error);
}

struct EmbedCase {
  int B, n_t, P, L, D;
  int n_tok;  // 0: all N tokens (token_index null); else a random subset of that size per sample
};

std::ostream& operator<<(std::ostream& os, const EmbedCase& c) {
  return os << "B" << c.B << "_nt" << c.n_t << "_P" << c.P << "_L" << c.L << "_D" << c.D << "_ntok" << c.n_tok;
}

struct Params {
  std::vector<double> w, b, parcel, time;
};

class PatchEmbedTest : public ::testing::TestWithParam<EmbedCase> {
 protected:
  void SetUp() override {
    const EmbedCase& c = GetParam();
    N = c.n_t * c.P;
    n_tok = c.n_tok == 0 ? N : c.n_tok;
    patches = random_floats(static_cast<size_t>(c.B) * N * c.L, 1);
    w = random_floats(static_cast<size_t>(c.D) * c.L, 2);
    b = random_floats(c.D, 3);
    parcel = random_floats(static_cast<size_t>(c.P) * c.D, 4);
    time = random_floats(static_cast<size_t>(c.n_t) * c.D, 5);
    dout = random_floats(static_cast<size_t>(c.B) * n_tok * c.D, 6);
    if (c.n_tok != 0) token_index = random_token_subsets(c.B, N, n_tok, 7);
  }
  const int32_t* index() const { return token_index.empty() ? nullptr : token_index.data(); }
  int token(int bi, int t) const { return token_index.empty() ? t : token_index[bi * n_tok + t]; }

  std::vector<double> reference_forward(const Params& q) const {
    const EmbedCase& c = GetParam();
    std::vector<double> out(static_cast<size_t>(c.B) * n_tok * c.D);
    for (int bi = 0; bi < c.B; ++bi)
      for (int t = 0; t < n_tok; ++t) {
        const int i = token(bi, t), j = i / c.P, p = i % c.P;
        for (int d = 0; d < c.D; ++d) {
          double e = q.b[d] + q.parcel[p * c.D + d] + q.time[j * c.D + d];
          for (int l = 0; l < c.L; ++l) e += q.w[d * c.L + l] * patches[(bi * N + i) * c.L + l];
          out[(bi * n_tok + t) * c.D + d] = e;
        }
      }
    return out;
  }
  Params params() const { return {to_double(w), to_double(b), to_double(parcel), to_double(time)}; }

  int N = 0, n_tok = 0;
  std::vector<float> patches, w, b, parcel, time, dout;
  std::vector<int32_t> token_index;
};

TEST_P(PatchEmbedTest, ForwardMatchesFloat64) {
  const EmbedCase& c = GetParam();
  std::vector<float> out(dout.size(), 5.0f);
  cpu::patch_embed_forward(out.data(), patches.data(), w.data(), b.data(), parcel.data(), time.data(), index(), c.B,
                           N, n_tok, c.P, c.L, c.D);
  EXPECT_LT(rel_error(out, reference_forward(params())), 2e-6);
}

TEST_P(PatchEmbedTest, BackwardMatchesFloat64AndAddsIntoGradients) {
  const EmbedCase& c = GetParam();
  std::vector<double> want_w(w.size(), 0.0), want_b(b.size(), 0.0), want_parcel(parcel.size(), 0.0),
      want_time(time.size(), 0.0);
  for (int bi = 0; bi < c.B; ++bi)
    for (int t = 0; t < n_tok; ++t) {
      const int i = token(bi, t), j = i / c.P, p = i % c.P;
      for (int d = 0; d < c.D; ++d) {
        const double g = dout[(bi * n_tok + t) * c.D + d];
        want_b[d] += g;
        want_parcel[p * c.D + d] += g;
        want_time[j * c.D + d] += g;
        for (int l = 0; l < c.L; ++l) want_w[d * c.L + l] += g * patches[(bi * N + i) * c.L + l];
      }
    }
  const std::vector<float> w0 = random_floats(w.size(), 11), b0 = random_floats(b.size(), 12),
                           parcel0 = random_floats(parcel.size(), 13), time0 = random_floats(time.size(), 14);
  std::vector<float> dw = w0, db = b0, dparcel = parcel0, dtime = time0;
  cpu::patch_embed_backward(dw.data(), db.data(), dparcel.data(), dtime.data(), dout.data(), patches.data(), index(),
                            c.B, N, n_tok, c.P, c.L, c.D);
  EXPECT_LT(rel_error_added(dw, w0, want_w), 1e-5);
  EXPECT_LT(rel_error_added(db, b0, want_b), 1e-5);
  EXPECT_LT(rel_error_added(dparcel, parcel0, want_parcel), 1e-5);
  EXPECT_LT(rel_error_added(dtime, time0, want_time), 1e-5);
}

TEST_P(PatchEmbedTest, BackwardMatchesFiniteDifferences) {
  const EmbedCase& c = GetParam();
  std::vector<float> dw(w.size(), 0.0f), db(b.size(), 0.0f), dparcel(parcel.size(), 0.0f), dtime(time.size(), 0.0f);
  cpu::patch_embed_backward(dw.data(), db.data(), dparcel.data(), dtime.data(), dout.data(), patches.data(), index(),
                            c.B, N, n_tok, c.P, c.L, c.D);
  const std::vector<double> g = to_double(dout);
  const Params base = params();
  // The gradient of sum(dout * out) with respect to the member `field` of the parameters.
  const auto check = [&](std::vector<double> Params::*field, const std::vector<float>& got, const char* name) {
    const auto idx = sample_indices(got.size(), 40, 9);
    const auto f = [&](const std::vector<double>& v) {
      Params q = base;
      q.*field = v;
      return project(g, reference_forward(q));
    };
    EXPECT_LT(rel_error(pick(got, idx), numeric_gradient(f, base.*field, idx)), 1e-5) << name;
  };
  check(&Params::w, dw, "dw");
  check(&Params::b, db, "db");
  check(&Params::parcel, dparcel, "dparcel_embed");
  check(&Params::time, dtime, "dtime_embed");
}

INSTANTIATE_TEST_SUITE_P(Cases, PatchEmbedTest,
                         ::testing::Values(EmbedCase{3, 5, 7, 4, 70, 0}, EmbedCase{2, 3, 7, 5, 10, 9},
                                           EmbedCase{1, 4, 33, 6, 130, 50}, EmbedCase{3, 2, 5, 3, 8, 0}),
                         [](const ::testing::TestParamInfo<EmbedCase>& param_info) {
                           return ::testing::PrintToString(param_info.param);
                         });

TEST(PatchEmbedArgsTest, RejectsTokenIndexOutOfRange) {
  const int B = 1, P = 2, L = 2, D = 2, N = 4;
  std::vector<float> out(2 * D), patches(N * L), w(D * L), b(D), parcel(P * D), time(2 * D);
  const std::vector<int32_t> bad = {1, 4};
  EXPECT_THROW(cpu::patch_embed_forward(out.data(), patches.data(), w.data(), b.data(), parcel.data(), time.data(),
                                        bad.data(), B, N, 2, P, L, D),
               bfm::Error);
  EXPECT_THROW(cpu::patch_embed_forward(out.data(), patches.data(), w.data(), b.data(), parcel.data(), time.data(),
                                        nullptr, B, 5, 5, P, L, D),
               bfm::Error);  // N not a multiple of P
}

}  // namespace
