// attention_forward / attention_backward against the plain full softmax in float64 (every score of a head at once,
// the mask written from the MODEL_SPEC rule: a token of time patch j sees the tokens of time patches j' <= j), and
// the backward against central finite differences of that float64 forward.
#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include "reference.h"
#include "base/error.h"

namespace {

using namespace bfm::test;
namespace cpu = bfm::kernels::cpu;

struct AttentionCase {
  int B, N, H, dh;
  int P;            // causal_block: 0 = bidirectional, else parcels per time patch
  float amplitude;  // qkv drawn from [-amplitude, amplitude]; large values give sharp, large scores
  double tol;       // relative error allowed, float32 kernel vs float64 reference
};

std::ostream& operator<<(std::ostream& os, const AttentionCase& c) {
  return os << "B" << c.B << "_N" << c.N << "_H" << c.H << "_dh" << c.dh << "_P" << c.P << "_amp"
            << static_cast<int>(c.amplitude);
}

std::string case_name(const ::testing::TestParamInfo<AttentionCase>& param_info) {
  return ::testing::PrintToString(param_info.param);
}

bool sees(const AttentionCase& c, int query, int key) { return c.P == 0 || key / c.P <= query / c.P; }

struct Reference {
  std::vector<double> out, lse;  // [B, N, D], [B, H, N]
};

// Plain softmax attention in float64, one head at a time.
Reference reference_forward(const std::vector<double>& qkv, const AttentionCase& c) {
  const int D = c.H * c.dh;
  Reference ref{std::vector<double>(static_cast<size_t>(c.B) * c.N * D), std::vector<double>(c.B * c.H * c.N)};
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.dh));
  std::vector<double> s(c.N);
  for (int b = 0; b < c.B; ++b)
    for (int h = 0; h < c.H; ++h)
      for (int i = 0; i < c.N; ++i) {
        const double* q = &qkv[(static_cast<size_t>(b) * c.N + i) * 3 * D + h * c.dh];
        double mx = -std::numeric_limits<double>::infinity();
        for (int k = 0; k < c.N; ++k) {
          if (!sees(c, i, k)) continue;
          const double* kk = &qkv[(static_cast<size_t>(b) * c.N + k) * 3 * D + D + h * c.dh];
          double dot = 0.0;
          for (int d = 0; d < c.dh; ++d) dot += q[d] * kk[d];
          s[k] = dot * scale;
          mx = std::max(mx, s[k]);
        }
        double sum = 0.0;
        for (int k = 0; k < c.N; ++k)
          if (sees(c, i, k)) sum += std::exp(s[k] - mx);
        double* o = &ref.out[(static_cast<size_t>(b) * c.N + i) * D + h * c.dh];
        for (int k = 0; k < c.N; ++k) {
          if (!sees(c, i, k)) continue;
          const double p = std::exp(s[k] - mx) / sum;
          const double* v = &qkv[(static_cast<size_t>(b) * c.N + k) * 3 * D + 2 * D + h * c.dh];
          for (int d = 0; d < c.dh; ++d) o[d] += p * v[d];
        }
        ref.lse[(b * c.H + h) * c.N + i] = mx + std::log(sum);
      }
  return ref;
}

// dqkv of sum(dout * out) in float64 from the full probability matrix of each head:
// dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(P * dP)), dQ = dS K / sqrt(dh), dK = dS^T Q / sqrt(dh).
std::vector<double> reference_backward(const std::vector<double>& qkv, const std::vector<double>& dout,
                                       const AttentionCase& c) {
  const int D = c.H * c.dh, N = c.N;
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.dh));
  std::vector<double> dqkv(qkv.size(), 0.0);
  const auto q = [&](int b, int i) { return &qkv[(static_cast<size_t>(b) * N + i) * 3 * D]; };
  std::vector<double> p(static_cast<size_t>(N) * N), dp(static_cast<size_t>(N) * N);
  for (int b = 0; b < c.B; ++b)
    for (int h = 0; h < c.H; ++h) {
      const int off = h * c.dh;
      for (int i = 0; i < N; ++i) {
        double mx = -std::numeric_limits<double>::infinity();
        for (int k = 0; k < N; ++k) {
          double dot = 0.0;
          for (int d = 0; d < c.dh; ++d) dot += q(b, i)[off + d] * q(b, k)[D + off + d];
          p[i * N + k] = sees(c, i, k) ? dot * scale : -std::numeric_limits<double>::infinity();
          mx = std::max(mx, p[i * N + k]);
        }
        double sum = 0.0;
        for (int k = 0; k < N; ++k) sum += (p[i * N + k] = std::exp(p[i * N + k] - mx));
        for (int k = 0; k < N; ++k) p[i * N + k] /= sum;
        const double* g = &dout[(static_cast<size_t>(b) * N + i) * D + off];
        double row = 0.0;
        for (int k = 0; k < N; ++k) {
          double dot = 0.0;
          for (int d = 0; d < c.dh; ++d) dot += g[d] * q(b, k)[2 * D + off + d];
          dp[i * N + k] = dot;
          row += p[i * N + k] * dot;
        }
        for (int k = 0; k < N; ++k) {
          const double ds = p[i * N + k] * (dp[i * N + k] - row);
          double* dq = &dqkv[(static_cast<size_t>(b) * N + i) * 3 * D + off];
          double* dk = &dqkv[(static_cast<size_t>(b) * N + k) * 3 * D + D + off];
          double* dv = &dqkv[(static_cast<size_t>(b) * N + k) * 3 * D + 2 * D + off];
          for (int d = 0; d < c.dh; ++d) {
            dq[d] += ds * q(b, k)[D + off + d] * scale;
            dk[d] += ds * q(b, i)[off + d] * scale;
            dv[d] += p[i * N + k] * g[d];
          }
        }
      }
    }
  return dqkv;
}

class AttentionTest : public ::testing::TestWithParam<AttentionCase> {
 protected:
  void SetUp() override {
    const AttentionCase& c = GetParam();
    D = c.H * c.dh;
    const uint32_t seed = static_cast<uint32_t>(c.B * 1000003 + c.N * 1009 + c.H * 101 + c.dh * 7 + c.P);
    qkv = random_floats(static_cast<size_t>(c.B) * c.N * 3 * D, seed, -c.amplitude, c.amplitude);
    dout = random_floats(static_cast<size_t>(c.B) * c.N * D, seed + 1);
  }
  std::vector<float> forward_out(std::vector<float>* lse_out = nullptr) const {
    const AttentionCase& c = GetParam();
    std::vector<float> out(static_cast<size_t>(c.B) * c.N * D, std::nanf("")), lse(c.B * c.H * c.N, std::nanf(""));
    cpu::attention_forward(out.data(), lse.data(), qkv.data(), c.B, c.N, c.H, c.dh, c.P);
    if (lse_out != nullptr) *lse_out = lse;
    return out;
  }
  int D = 0;
  std::vector<float> qkv, dout;
};

TEST_P(AttentionTest, ForwardMatchesFullSoftmaxInFloat64) {
  const AttentionCase& c = GetParam();
  std::vector<float> lse;
  const std::vector<float> out = forward_out(&lse);
  const Reference ref = reference_forward(to_double(qkv), c);
  EXPECT_LT(rel_error(out, ref.out), c.tol);
  EXPECT_LT(rel_error(lse, ref.lse), c.tol);
}

TEST_P(AttentionTest, BackwardMatchesFloat64AndAddsIntoGradient) {
  const AttentionCase& c = GetParam();
  std::vector<float> lse;
  const std::vector<float> out = forward_out(&lse);
  const std::vector<float> before = random_floats(qkv.size(), 99);
  std::vector<float> dqkv = before;
  cpu::attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), c.B, c.N, c.H, c.dh, c.P);
  const std::vector<double> want = reference_backward(to_double(qkv), to_double(dout), c);
  EXPECT_LT(rel_error_added(dqkv, before, want), 2 * c.tol);

  // A second call adds the same gradient again, bit for bit (one thread per head, fixed order).
  std::vector<float> once(qkv.size(), 0.0f), twice(qkv.size(), 0.0f);
  cpu::attention_backward(once.data(), dout.data(), qkv.data(), out.data(), lse.data(), c.B, c.N, c.H, c.dh, c.P);
  cpu::attention_backward(twice.data(), dout.data(), qkv.data(), out.data(), lse.data(), c.B, c.N, c.H, c.dh, c.P);
  EXPECT_EQ(once, twice);

  // And the same whatever the thread count: each head is one thread's, start to end.
  std::vector<float> one_thread(qkv.size(), 0.0f);
  with_threads(1, [&] {
    cpu::attention_backward(one_thread.data(), dout.data(), qkv.data(), out.data(), lse.data(), c.B, c.N, c.H, c.dh,
                            c.P);
  });
  EXPECT_EQ(once, one_thread);
}

INSTANTIATE_TEST_SUITE_P(
    Bidirectional, AttentionTest,
    ::testing::Values(AttentionCase{1, 35, 2, 8, 0, 2.0f, 5e-6}, AttentionCase{3, 130, 2, 16, 0, 2.0f, 5e-6},
                      AttentionCase{1, 197, 3, 64, 0, 1.0f, 5e-6}, AttentionCase{1, 300, 2, 16, 0, 2.0f, 5e-6},
                      AttentionCase{1, 64, 1, 8, 0, 2.0f, 5e-6},   // exactly one tile
                      AttentionCase{1, 70, 1, 128, 0, 1.0f, 5e-6},
                      AttentionCase{2, 200, 1, 16, 0, 8.0f, 5e-5},  // scores of tens: exp needs the running max
                      // dh of 2 and 3 vectors of 16 lanes (6 of 8): the 2-wide and 1-wide register blocks
                      AttentionCase{2, 100, 2, 32, 0, 2.0f, 5e-6}, AttentionCase{1, 150, 1, 48, 0, 1.0f, 5e-6}
                      ),
    case_name);

// Time-causal: tiles of 64 tokens straddle the patch boundaries unless P divides 64.
INSTANTIATE_TEST_SUITE_P(
    TimeCausal, AttentionTest,
    ::testing::Values(AttentionCase{1, 35, 2, 8, 7, 2.0f, 5e-6},    // 5 patches inside one tile
                      AttentionCase{3, 130, 2, 16, 10, 2.0f, 5e-6},  // 13 patches, 3 query and key tiles
                      AttentionCase{1, 301, 2, 16, 7, 2.0f, 5e-6},   // 43 patches, 5 tiles
                      AttentionCase{1, 300, 1, 64, 50, 2.0f, 5e-6},  // 6 patches; whole key tiles in the future
                      AttentionCase{1, 197, 1, 8, 1, 2.0f, 5e-6},    // P = 1: token-causal
                      AttentionCase{1, 320, 1, 8, 64, 2.0f, 5e-6},   // patches aligned with tiles
                      AttentionCase{2, 130, 2, 8, 130, 2.0f, 5e-6},  // one patch: sees everything
                      AttentionCase{1, 100, 2, 12, 5, 2.0f, 5e-6},   // dh not a multiple of the vector width
                      AttentionCase{1, 130, 2, 24, 13, 2.0f, 5e-6},  // neither, and padded to 32 on AVX-512
                      AttentionCase{1, 210, 1, 16, 70, 8.0f, 5e-5}),
    case_name);

// Finite differences of the float64 forward, on a sample of qkv entries (q, k and v all get hit).
class AttentionGradientTest : public AttentionTest {};

TEST_P(AttentionGradientTest, BackwardMatchesFiniteDifferences) {
  const AttentionCase& c = GetParam();
  std::vector<float> lse;
  const std::vector<float> out = forward_out(&lse);
  std::vector<float> dqkv(qkv.size(), 0.0f);
  cpu::attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), c.B, c.N, c.H, c.dh, c.P);
  const std::vector<double> g = to_double(dout);
  const auto loss = [&](const std::vector<double>& x) { return project(g, reference_forward(x, c).out); };
  const std::vector<size_t> idx = sample_indices(qkv.size(), 60, 7);
  EXPECT_LT(rel_error(pick(dqkv, idx), numeric_gradient(loss, to_double(qkv), idx)), 2 * c.tol);
}

INSTANTIATE_TEST_SUITE_P(Both, AttentionGradientTest,
                         ::testing::Values(AttentionCase{1, 35, 2, 8, 0, 2.0f, 5e-6},
                                           AttentionCase{2, 70, 2, 16, 0, 2.0f, 5e-6},
                                           AttentionCase{1, 35, 2, 8, 7, 2.0f, 5e-6},
                                           AttentionCase{2, 130, 1, 16, 10, 2.0f, 5e-6}),
                         case_name);

TEST(AttentionArgsTest, RejectsBadSizes) {
  float x = 0.0f;
  EXPECT_THROW(cpu::attention_forward(&x, &x, &x, 1, -1, 1, 8, 0), bfm::Error);
  EXPECT_THROW(cpu::attention_forward(&x, &x, &x, 1, 4, 0, 8, 0), bfm::Error);
  EXPECT_THROW(cpu::attention_backward(&x, &x, &x, &x, &x, 1, 4, 1, 8, -2), bfm::Error);
}

}  // namespace
