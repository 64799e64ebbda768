// The GPU attention (kernels/cuda/attention.cu) in both modes, float (SIMT, the checking mode) and bf16 (tensor
// cores; every bf16 forward kernel: the portable mma.sync one and, on a GPU of compute capability 9.0, the Hopper
// wgmma ones of kernels/cuda/attention_sm90.cu, each followed by the one backward), against two oracles on the same inputs rounded to the mode's type: the CPU twin
// (kernels/cpu/attention.cpp) and a plain full softmax in float64 written here (every score of a head at once,
// the mask from the rule "query i sees key k iff k / P <= i / P").
//
// Tolerances (norm-wise relative error over all elements):
//   float  2e-5 everywhere: fp32 arithmetic in another order than the CPU twin's.
//   bf16   out 1.5e-2: out is stored in bf16 (2^-9 relative per element, about 2.3e-3 norm-wise) and P is rounded
//          to bf16 before the P V product; an emulation of these roundings (PyTorch on the CPU, float64 truth) gave
//          2.2e-3 to 2.4e-3 on the cases below.
//          lse 1e-4: fp32 arithmetic on exact products of bf16 inputs.
//          gradients 2e-2: P and dS are rounded to bf16 before their products, delta comes from the bf16 out, and
//          prefill + gradient is rounded to bf16 when stored; the emulation gave 2.5e-3 to 4.8e-3 (the largest
//          with sharp softmax rows, amplitude 4).
#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <ostream>
#include <string>
#include <type_traits>
#include <optional>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/cuda/attention_sm90.cuh"
#include "reference.h"
#include "base/error.h"

namespace {

using namespace bfm::test;
namespace cpu = bfm::kernels::cpu;
namespace gpu = bfm::kernels::cuda;
using bf16 = bfm::kernels::cuda::bf16;
namespace variants = bfm::kernels::cuda::attention_detail;
using variants::ForwardVariant;

// Which bf16 forward a check runs: the variant, and for wgmma its keys per tile (0: the default).
struct ForwardChoice {
  ForwardVariant variant = ForwardVariant::kAuto;
  int wgmma_key_tile = 0;
};

struct CudaAttentionCase {
  int B, N, H, dh;
  int P;            // causal_block: 0 = bidirectional, else parcels per time patch
  float amplitude;  // qkv drawn from [-amplitude, amplitude]: scores of about amplitude^2 / 3 (std)
};

std::ostream& operator<<(std::ostream& os, const CudaAttentionCase& c) {
  return os << "B" << c.B << "_N" << c.N << "_H" << c.H << "_dh" << c.dh << "_P" << c.P << "_amp"
            << static_cast<int>(c.amplitude);
}

std::string case_name(const ::testing::TestParamInfo<CudaAttentionCase>& param_info) {
  return ::testing::PrintToString(param_info.param);
}

struct Float64Attention {
  std::vector<double> out, lse, dqkv;  // [B, N, D], [B, H, N], [B, N, 3D]
};

// Forward and the gradient of sum(dout * out), one head at a time, from the full probability matrix:
// dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(P * dP)), dQ = dS K / sqrt(dh), dK = dS^T Q / sqrt(dh).
Float64Attention float64_attention(const std::vector<float>& qkv_f, const std::vector<float>& dout_f,
                                   const CudaAttentionCase& c) {
  const int N = c.N, D = c.H * c.dh;
  const std::vector<double> qkv = to_double(qkv_f), dout = to_double(dout_f);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.dh));
  Float64Attention ref{std::vector<double>(static_cast<size_t>(c.B) * N * D, 0.0),
                       std::vector<double>(static_cast<size_t>(c.B) * c.H * N, 0.0),
                       std::vector<double>(qkv.size(), 0.0)};
  std::vector<double> p(static_cast<size_t>(N) * N);
  for (int b = 0; b < c.B; ++b)
    for (int h = 0; h < c.H; ++h) {
      const auto at = [&](int i, int third) {
        return &qkv[(static_cast<size_t>(b) * N + i) * 3 * D + third * D + h * c.dh];
      };
      const auto grad = [&](int i, int third) {
        return &ref.dqkv[(static_cast<size_t>(b) * N + i) * 3 * D + third * D + h * c.dh];
      };
      for (int i = 0; i < N; ++i) {
        double mx = -std::numeric_limits<double>::infinity();
        for (int k = 0; k < N; ++k) {
          double dot = 0.0;
          for (int d = 0; d < c.dh; ++d) dot += at(i, 0)[d] * at(k, 1)[d];
          const bool sees = c.P == 0 || k / c.P <= i / c.P;
          p[i * N + k] = sees ? dot * scale : -std::numeric_limits<double>::infinity();
          mx = std::max(mx, p[i * N + k]);
        }
        double sum = 0.0;
        for (int k = 0; k < N; ++k) sum += (p[i * N + k] = std::exp(p[i * N + k] - mx));
        double* o = &ref.out[(static_cast<size_t>(b) * N + i) * D + h * c.dh];
        for (int k = 0; k < N; ++k) {
          p[i * N + k] /= sum;
          for (int d = 0; d < c.dh; ++d) o[d] += p[i * N + k] * at(k, 2)[d];
        }
        ref.lse[(static_cast<size_t>(b) * c.H + h) * N + i] = mx + std::log(sum);
      }
      std::vector<double> dp(N);
      for (int i = 0; i < N; ++i) {
        const double* g = &dout[(static_cast<size_t>(b) * N + i) * D + h * c.dh];
        double row = 0.0;
        for (int k = 0; k < N; ++k) {
          double dot = 0.0;
          for (int d = 0; d < c.dh; ++d) dot += g[d] * at(k, 2)[d];
          dp[k] = dot;
          row += p[i * N + k] * dot;
        }
        for (int k = 0; k < N; ++k) {
          const double pk = p[i * N + k], ds = pk * (dp[k] - row);
          for (int d = 0; d < c.dh; ++d) {
            grad(i, 0)[d] += ds * at(k, 1)[d] * scale;
            grad(k, 1)[d] += ds * at(i, 0)[d] * scale;
            grad(k, 2)[d] += pk * g[d];
          }
        }
      }
    }
  return ref;
}

std::vector<float> to_float(const std::vector<double>& v) { return {v.begin(), v.end()}; }

// Columns [third * D, (third + 1) * D) of every row of a [rows, 3D] buffer: the dq, dk or dv part of dqkv.
std::vector<float> third_of(const std::vector<float>& v, int third, int D) {
  std::vector<float> out;
  out.reserve(v.size() / 3);
  for (size_t row = 0; row < v.size() / (3 * D); ++row)
    out.insert(out.end(), v.begin() + row * 3 * D + third * D, v.begin() + row * 3 * D + (third + 1) * D);
  return out;
}

template <typename T>
double output_tolerance() {
  return std::is_same_v<T, float> ? 2e-5 : 1.5e-2;
}
template <typename T>
double lse_tolerance() {
  return std::is_same_v<T, float> ? 2e-5 : 1e-4;
}
template <typename T>
double gradient_tolerance() {
  return std::is_same_v<T, float> ? 2e-5 : 2e-2;
}

// What dqkv starts as: uniform random values up to the gradient's rms, so that a kernel that overwrote instead of
// adding would be off by about 60% (the prefill's own rms), while storing prefill + gradient in T costs only T's
// rounding of a typical entry.
std::vector<float> prefill_like(const std::vector<double>& want, uint32_t seed) {
  double sum_sq = 0.0;
  for (double w : want) sum_sq += w * w;
  const float rms = static_cast<float>(std::sqrt(sum_sq / static_cast<double>(want.size())));
  std::vector<float> v = random_floats(want.size(), seed);
  for (float& x : v) x *= rms;
  return v;
}

// A gradient part against the float64 reference and the CPU twin. Where the float64 part is exactly zero (one
// visible key per query: the softmax is constant, so dq and dk vanish) a relative error means nothing; the part
// must then be zero up to rounding.
void expect_gradient_close(const std::vector<float>& got, const std::vector<float>& want,
                           const std::vector<float>& cpu_twin, double tol, const std::string& what) {
  double want_sq = 0.0, got_max = 0.0;
  for (float w : want) want_sq += double(w) * w;
  for (float g : got) got_max = std::max(got_max, std::abs(double(g)));
  if (want_sq == 0.0) {
    EXPECT_LT(got_max, 1e-5) << what << " is zero in exact arithmetic";
    return;
  }
  EXPECT_LT(norm_rel_error(got, want), tol) << what << " vs float64";
  EXPECT_LT(norm_rel_error(got, cpu_twin), tol) << what << " vs CPU twin";
}

template <typename T>
void check_forward_and_backward(const CudaAttentionCase& c, ForwardChoice choice = {}) {
  const int D = c.H * c.dh;
  const uint32_t seed = static_cast<uint32_t>(c.B * 1000003 + c.N * 1009 + c.H * 101 + c.dh * 7 + c.P);
  // The inputs a T kernel really sees; both oracles get exactly these.
  const std::vector<float> qkv =
      rounded_to<T>(random_floats(static_cast<size_t>(c.B) * c.N * 3 * D, seed, -c.amplitude, c.amplitude));
  const std::vector<float> dout = rounded_to<T>(random_floats(static_cast<size_t>(c.B) * c.N * D, seed + 1));
  const Float64Attention ref = float64_attention(qkv, dout, c);

  std::vector<float> out_cpu(static_cast<size_t>(c.B) * c.N * D), lse_cpu(static_cast<size_t>(c.B) * c.H * c.N);
  cpu::attention_forward(out_cpu.data(), lse_cpu.data(), qkv.data(), c.B, c.N, c.H, c.dh, c.P);
  std::vector<float> dqkv_cpu(qkv.size(), 0.0f);
  cpu::attention_backward(dqkv_cpu.data(), dout.data(), qkv.data(), out_cpu.data(), lse_cpu.data(), c.B, c.N, c.H,
                          c.dh, c.P);

  // Forward: out and lse start as NaN (DeviceBuffer poisons them), so anything left unwritten fails.
  DeviceBuffer<T> d_qkv(qkv), d_out(out_cpu.size()), d_dout(dout);
  DeviceBuffer<float> d_lse(lse_cpu.size());
  if constexpr (std::is_same_v<T, bf16>) {
    variants::attention_forward_variant(choice.variant, d_out.ptr, d_lse.ptr, d_qkv.ptr, c.B, c.N, c.H, c.dh, c.P,
                                        nullptr, choice.wgmma_key_tile);
  } else {
    gpu::attention_forward<T>(d_out.ptr, d_lse.ptr, d_qkv.ptr, c.B, c.N, c.H, c.dh, c.P, nullptr);
  }
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  const std::vector<float> out = d_out.host(), lse = d_lse.host();
  EXPECT_EQ(count_nonfinite(out), 0u);
  EXPECT_EQ(count_nonfinite(lse), 0u);
  EXPECT_LT(norm_rel_error(out, out_cpu), output_tolerance<T>()) << "out vs CPU twin";
  EXPECT_LT(norm_rel_error(out, to_float(ref.out)), output_tolerance<T>()) << "out vs float64";
  EXPECT_LT(norm_rel_error(lse, lse_cpu), lse_tolerance<T>()) << "lse vs CPU twin";
  EXPECT_LT(norm_rel_error(lse, to_float(ref.lse)), lse_tolerance<T>()) << "lse vs float64";

  // Backward from the GPU's own out and lse (as the model runs it) into a dqkv pre-filled with random values of
  // the gradient's size: the kernel must add, and the added part is compared.
  const std::vector<float> before = rounded_to<T>(prefill_like(ref.dqkv, seed + 2));
  DeviceBuffer<T> d_dqkv(before);
  {
    // The portable-forward test checks the portable backward too; the others run what the GPU picks (the Hopper
    // backward on an H100/H200 for dh 64 and 128).
    std::optional<bfm::test::ScopedEnv> portable;
    if constexpr (std::is_same_v<T, bf16>) {
      if (choice.variant == ForwardVariant::kMma) portable.emplace("BFM_ATTENTION_BWD", "mma");
    }
    gpu::attention_backward<T>(d_dqkv.ptr, d_dout.ptr, d_qkv.ptr, d_out.ptr, d_lse.ptr, c.B, c.N, c.H, c.dh, c.P,
                               nullptr);
    ASSERT_CUDA_OK(cudaDeviceSynchronize());
  }
  std::vector<float> added = d_dqkv.host();
  EXPECT_EQ(count_nonfinite(added), 0u);
  for (size_t i = 0; i < added.size(); ++i) added[i] -= before[i];
  const std::vector<float> want = to_float(ref.dqkv);
  const char* part[3] = {"dq", "dk", "dv"};
  for (int third = 0; third < 3; ++third)
    expect_gradient_close(third_of(added, third, D), third_of(want, third, D), third_of(dqkv_cpu, third, D),
                          gradient_tolerance<T>(), part[third]);
}

class CudaAttentionTest : public ::testing::TestWithParam<CudaAttentionCase> {};

TEST_P(CudaAttentionTest, Float32MatchesCpuTwinAndFloat64) {
  SKIP_WITHOUT_GPU();
  check_forward_and_backward<float>(GetParam());
}

// The portable bf16 forward (mma.sync), forced whatever the GPU.
TEST_P(CudaAttentionTest, Bf16MatchesCpuTwinAndFloat64) {
  SKIP_WITHOUT_GPU();
  check_forward_and_backward<bf16>(GetParam(), {ForwardVariant::kMma, 0});
}

// The Hopper bf16 forward (wgmma, sm_90a), every key tile it has for the head dim; skipped where it cannot run
// (not a compute capability 9.0 GPU, or dh 32, which has only the portable kernel).
TEST_P(CudaAttentionTest, Bf16WgmmaMatchesCpuTwinAndFloat64) {
  SKIP_WITHOUT_GPU();
  const CudaAttentionCase& c = GetParam();
  if (!variants::wgmma_forward_available(c.dh))
    GTEST_SKIP() << "the wgmma forward does not run here (needs compute capability 9.0 and dh 64 or 128)";
  for (const int key_tile : c.dh == 64 ? std::vector<int>{64, 128} : std::vector<int>{128}) {
    SCOPED_TRACE("wgmma key tile " + std::to_string(key_tile));
    check_forward_and_backward<bf16>(c, {ForwardVariant::kWgmma, key_tile});
  }
}

// What attention_forward<bf16> runs by itself (wgmma on an H100/H200 for dh 64 and 128, else mma).
TEST_P(CudaAttentionTest, Bf16DefaultMatchesCpuTwinAndFloat64) {
  SKIP_WITHOUT_GPU();
  check_forward_and_backward<bf16>(GetParam(), {ForwardVariant::kAuto, 0});
}

// Tiles: bf16 forward 128 queries x 64 keys (mma), 128 queries x 64 or 128 keys (wgmma); bf16 backward 64-row
// blocks streaming 64 (dh <= 64) or 32 (dh 128) rows; float 32 x 32. The lengths below end inside tiles of every
// size, and N = 1060 is the encoder's length in the training step (17 tiles of 64 keys, 9 of 128, a partial last).
INSTANTIATE_TEST_SUITE_P(
    Bidirectional, CudaAttentionTest,
    ::testing::Values(CudaAttentionCase{2, 1, 2, 32, 0, 2.0f},     // a single token
                      CudaAttentionCase{2, 37, 3, 64, 0, 2.0f},    // one partial tile
                      CudaAttentionCase{2, 128, 2, 64, 0, 2.0f},   // exactly one forward tile
                      CudaAttentionCase{2, 130, 2, 128, 0, 2.0f},  // two rows into the next tile
                      CudaAttentionCase{2, 257, 2, 32, 0, 2.0f},
                      CudaAttentionCase{1, 257, 2, 64, 0, 4.0f},   // scores of tens: the running max matters
                      CudaAttentionCase{1, 1060, 2, 64, 0, 2.0f}),  // many key tiles through both stages
    case_name);

INSTANTIATE_TEST_SUITE_P(
    TimeCausal, CudaAttentionTest,
    ::testing::Values(CudaAttentionCase{2, 1, 2, 64, 1, 2.0f},
                      CudaAttentionCase{2, 185, 2, 64, 37, 2.0f},    // 5 patches straddling every tile size
                      CudaAttentionCase{2, 130, 3, 32, 10, 2.0f},    // 13 patches
                      CudaAttentionCase{2, 300, 2, 128, 100, 2.0f},  // whole key tiles in the future are skipped
                      CudaAttentionCase{2, 256, 2, 64, 64, 2.0f},    // patches aligned with the tiles
                      CudaAttentionCase{1, 257, 2, 32, 1, 2.0f},     // P = 1: token-causal
                      CudaAttentionCase{1, 100, 2, 128, 7, 2.0f},    // P does not divide N: the last patch is short
                      CudaAttentionCase{1, 130, 2, 32, 424, 2.0f},   // one patch longer than N: sees everything
                      CudaAttentionCase{1, 1060, 2, 128, 106, 2.0f}),  // 10 patches over many key tiles
    case_name);

// Backward twice from the same start gives the same bits: every gradient element has one writer that sums in a
// fixed order (no atomics).
template <typename T>
void check_backward_repeats() {
  const CudaAttentionCase c{2, 203, 2, 64, 29, 2.0f};
  const int D = c.H * c.dh;
  const std::vector<float> qkv = random_floats(static_cast<size_t>(c.B) * c.N * 3 * D, 11, -2.0f, 2.0f);
  const std::vector<float> dout = random_floats(static_cast<size_t>(c.B) * c.N * D, 12);
  const std::vector<float> before = random_floats(qkv.size(), 13);
  DeviceBuffer<T> d_qkv(qkv), d_dout(dout), d_out(dout.size()), d_first(before), d_second(before);
  DeviceBuffer<float> d_lse(static_cast<size_t>(c.B) * c.H * c.N);
  gpu::attention_forward<T>(d_out.ptr, d_lse.ptr, d_qkv.ptr, c.B, c.N, c.H, c.dh, c.P, nullptr);
  gpu::attention_backward<T>(d_first.ptr, d_dout.ptr, d_qkv.ptr, d_out.ptr, d_lse.ptr, c.B, c.N, c.H, c.dh, c.P,
                             nullptr);
  gpu::attention_backward<T>(d_second.ptr, d_dout.ptr, d_qkv.ptr, d_out.ptr, d_lse.ptr, c.B, c.N, c.H, c.dh, c.P,
                             nullptr);
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  std::vector<T> first(qkv.size()), second(qkv.size());
  ASSERT_CUDA_OK(cudaMemcpy(first.data(), d_first.ptr, first.size() * sizeof(T), cudaMemcpyDeviceToHost));
  ASSERT_CUDA_OK(cudaMemcpy(second.data(), d_second.ptr, second.size() * sizeof(T), cudaMemcpyDeviceToHost));
  EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(T)), 0);
  EXPECT_EQ(count_nonfinite(d_first.host()), 0u);
}

TEST(CudaAttentionDeterminismTest, BackwardRepeatsBitForBitFloat32) {
  SKIP_WITHOUT_GPU();
  check_backward_repeats<float>();
}

TEST(CudaAttentionDeterminismTest, BackwardRepeatsBitForBitBf16) {
  SKIP_WITHOUT_GPU();
  check_backward_repeats<bf16>();
}

// The Hopper and the portable forward agree with each other more closely than either with the oracles: same
// inputs, the same fp32 softmax, P rounded to bf16 in both; they differ only in the order of the fp32 sums.
TEST(CudaAttentionVariantTest, WgmmaAgreesWithMma) {
  SKIP_WITHOUT_GPU();
  for (const int dh : {64, 128}) {
    if (!variants::wgmma_forward_available(dh)) GTEST_SKIP() << "the wgmma forward does not run here";
    const int B = 2, N = 333, H = 3, D = H * dh, P = 37;
    for (const int causal_block : {0, P}) {
      const std::vector<float> qkv = random_floats(static_cast<size_t>(B) * N * 3 * D, 21 + dh, -2.0f, 2.0f);
      DeviceBuffer<bf16> d_qkv(qkv), d_mma(static_cast<size_t>(B) * N * D), d_wgmma(static_cast<size_t>(B) * N * D);
      DeviceBuffer<float> lse_mma(static_cast<size_t>(B) * H * N), lse_wgmma(static_cast<size_t>(B) * H * N);
      variants::attention_forward_variant(ForwardVariant::kMma, d_mma.ptr, lse_mma.ptr, d_qkv.ptr, B, N, H, dh,
                                          causal_block, nullptr);
      variants::attention_forward_variant(ForwardVariant::kWgmma, d_wgmma.ptr, lse_wgmma.ptr, d_qkv.ptr, B, N, H,
                                          dh, causal_block, nullptr);
      ASSERT_CUDA_OK(cudaDeviceSynchronize());
      const std::vector<float> out_mma = d_mma.host(), out_wgmma = d_wgmma.host();
      EXPECT_EQ(count_nonfinite(out_wgmma), 0u);
      EXPECT_LT(norm_rel_error(out_wgmma, out_mma), 1e-2) << "dh " << dh << " causal_block " << causal_block;
      EXPECT_LT(norm_rel_error(lse_wgmma.host(), lse_mma.host()), 1e-5) << "dh " << dh;
    }
  }
}

// On an H100/H200 the Hopper forward must really be there (else every wgmma test above would only skip).
TEST(CudaAttentionVariantTest, WgmmaAvailableOnComputeCapability90) {
  SKIP_WITHOUT_GPU();
  int device = 0, major = 0, minor = 0;
  ASSERT_CUDA_OK(cudaGetDevice(&device));
  ASSERT_CUDA_OK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  ASSERT_CUDA_OK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  if (major != 9 || minor != 0) GTEST_SKIP() << "compute capability " << major << "." << minor << ", not 9.0";
  EXPECT_TRUE(variants::wgmma_forward_available(64));
  EXPECT_TRUE(variants::wgmma_forward_available(128));
  EXPECT_FALSE(variants::wgmma_forward_available(32));
}

// BFM_ATTENTION: a bad value, or wgmma where it cannot run (dh 32 never has it), is a clear error before any launch.
TEST(CudaAttentionVariantTest, EnvironmentChoiceIsChecked) {
  const char* old = std::getenv("BFM_ATTENTION");
  const std::string saved = old ? old : "";
  const auto run_dh32 = [] { gpu::attention_forward<bf16>(nullptr, nullptr, nullptr, 1, 4, 1, 32, 0, nullptr); };
  setenv("BFM_ATTENTION", "fastest", 1);
  EXPECT_THROW(run_dh32(), bfm::Error);
  setenv("BFM_ATTENTION", "wgmma", 1);
  EXPECT_THROW(run_dh32(), bfm::Error);
  EXPECT_THROW(variants::resolve_forward_variant(ForwardVariant::kWgmma, 32), bfm::Error);
  setenv("BFM_ATTENTION", "mma", 1);
  EXPECT_EQ(variants::resolve_forward_variant(ForwardVariant::kAuto, 64), ForwardVariant::kMma);
  EXPECT_EQ(variants::resolve_forward_variant(ForwardVariant::kAuto, 128), ForwardVariant::kMma);
  unsetenv("BFM_ATTENTION");
  EXPECT_EQ(variants::resolve_forward_variant(ForwardVariant::kAuto, 32), ForwardVariant::kMma);
  EXPECT_EQ(variants::resolve_forward_variant(ForwardVariant::kAuto, 64),
            variants::wgmma_forward_available(64) ? ForwardVariant::kWgmma : ForwardVariant::kMma);
  if (old) setenv("BFM_ATTENTION", saved.c_str(), 1);
}

// Unsupported head sizes are refused before anything touches the GPU, naming the value.
TEST(CudaAttentionArgsTest, RejectsHeadDim48) {
  const auto names_48 = [](auto&& call) {
    try {
      call();
    } catch (const bfm::Error& e) {
      return std::string(e.what()).find("48") != std::string::npos;
    }
    return false;
  };
  EXPECT_TRUE(names_48([] { gpu::attention_forward<float>(nullptr, nullptr, nullptr, 1, 4, 1, 48, 0, nullptr); }));
  EXPECT_TRUE(names_48([] { gpu::attention_forward<bf16>(nullptr, nullptr, nullptr, 1, 4, 1, 48, 0, nullptr); }));
  EXPECT_TRUE(names_48([] {
    gpu::attention_backward<bf16>(nullptr, nullptr, nullptr, nullptr, nullptr, 1, 4, 1, 48, 2, nullptr);
  }));
  EXPECT_THROW(gpu::attention_forward<float>(nullptr, nullptr, nullptr, 1, 4, 1, 48, 0, nullptr), bfm::Error);
}

}  // namespace
