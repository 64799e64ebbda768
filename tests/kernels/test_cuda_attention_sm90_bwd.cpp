// The Hopper (sm_90a, warpgroup MMA) bf16 attention backward (kernels/cuda/attention_sm90_bwd.cu) against two
// oracles on the same inputs: the CPU twin (kernels/cpu/attention.cpp, fp32) on inputs rounded to bf16, and the
// verified portable backward cuda::attention_backward<bf16> (mma.sync) on the very same device buffers.
//
// Inputs: qkv and dout rounded to bf16; out and lse from the CPU forward (out rounded to bf16, lse fp32), so no GPU
// forward is involved and all three backwards read identical out, lse. Every backward adds into a dqkv pre-filled
// with random values of the gradient's size (so a kernel that overwrote instead of adding would be off by ~60%);
// the added part (after - before) is compared third by third (dq, dk, dv), norm-wise relative:
//   vs CPU twin      2e-2 (P and dS rounded to bf16 before their products, prefill + gradient stored in bf16; the
//                    portable backward's test measured 2.5e-3 to 4.8e-3 on such cases against float64)
//   vs mma backward  2e-2 (the same roundings in another summation order; expected ~1e-3)
// A part that vanishes in exact arithmetic (N = 1: one visible key, the softmax is constant, so dq = dk = 0) must
// be zero up to rounding instead.
//
// Tests skip without a GPU, on a GPU that is not compute capability 9.0, or where the variant is unavailable;
// CudaAttentionSm90BwdSetup.AvailableOnHopper fails (instead of skipping) when a cc 9.0 device lacks it.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/attention.h"
#include "kernels/cuda/attention_sm90_bwd.cuh"
#include "reference.h"
#include "base/error.h"

namespace {

using namespace bfm::test;
namespace cpu = bfm::kernels::cpu;
namespace gpu = bfm::kernels::cuda;
using bf16 = bfm::kernels::cuda::bf16;

bool device_is_sm90() {
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return major == 9 && minor == 0;
}

#define SKIP_WITHOUT_SM90_BWD(dh)                                                                     \
  SKIP_WITHOUT_GPU();                                                                                 \
  if (!device_is_sm90()) GTEST_SKIP() << "the GPU is not of compute capability 9.0";                  \
  if (!gpu::detail::attention_backward_sm90_available(dh))                                            \
  GTEST_SKIP() << "the sm_90a attention backward is unavailable for dh=" << (dh)

struct Sm90BwdCase {
  int B, N, H, dh;
  int P;            // causal_block: 0 = bidirectional, else parcels per time patch
  float amplitude;  // qkv drawn from [-amplitude, amplitude]
};

std::ostream& operator<<(std::ostream& os, const Sm90BwdCase& c) {
  return os << "B" << c.B << "_N" << c.N << "_H" << c.H << "_dh" << c.dh << "_P" << c.P << "_amp"
            << static_cast<int>(c.amplitude);
}

std::string case_name(const ::testing::TestParamInfo<Sm90BwdCase>& info) {
  return ::testing::PrintToString(info.param);
}

// Columns [third * D, (third + 1) * D) of every row of a [rows, 3D] buffer: the dq, dk or dv part of dqkv.
std::vector<float> third_of(const std::vector<float>& v, int third, int D) {
  std::vector<float> out;
  out.reserve(v.size() / 3);
  for (size_t row = 0; row < v.size() / (3 * size_t(D)); ++row)
    out.insert(out.end(), v.begin() + row * 3 * D + third * D, v.begin() + row * 3 * D + (third + 1) * D);
  return out;
}

double rms(const std::vector<float>& v) {
  double s = 0.0;
  for (float x : v) s += double(x) * x;
  return v.empty() ? 0.0 : std::sqrt(s / double(v.size()));
}
double max_abs(const std::vector<float>& v) {
  double m = 0.0;
  for (float x : v) m = std::max(m, std::abs(double(x)));
  return m;
}

constexpr double kTolerance = 2e-2;

// One gradient part of the Hopper backward against a reference part. `vanishes`: the part is zero in exact
// arithmetic, so only its size is checked.
void expect_part_close(const std::vector<float>& got, const std::vector<float>& want, bool vanishes,
                       const std::string& what) {
  if (vanishes) {
    EXPECT_LT(max_abs(got), 1e-5) << what << " is zero in exact arithmetic";
    return;
  }
  const double err = norm_rel_error(got, want);
  EXPECT_LT(err, kTolerance) << what;
  std::printf("    %-26s norm-relative error %.3e\n", what.c_str(), err);
}

// What dqkv starts as: uniform random values up to the gradient's rms, rounded to bf16.
std::vector<float> prefill_like(const std::vector<float>& want, uint32_t seed) {
  const float scale = static_cast<float>(rms(want));
  std::vector<float> v = random_floats(want.size(), seed);
  for (float& x : v) x *= scale;
  return rounded_to<bf16>(v);
}

struct Inputs {
  std::vector<float> qkv, dout, out, lse, dqkv_cpu;
};

// qkv, dout (bf16-rounded), out (CPU forward, bf16-rounded), lse (CPU forward), and the CPU twin's gradient from
// exactly these.
Inputs make_inputs(const Sm90BwdCase& c, uint32_t seed) {
  const int D = c.H * c.dh;
  Inputs in;
  in.qkv = rounded_to<bf16>(random_floats(size_t(c.B) * c.N * 3 * D, seed, -c.amplitude, c.amplitude));
  in.dout = rounded_to<bf16>(random_floats(size_t(c.B) * c.N * D, seed + 1));
  std::vector<float> out(size_t(c.B) * c.N * D);
  in.lse.resize(size_t(c.B) * c.H * c.N);
  cpu::attention_forward(out.data(), in.lse.data(), in.qkv.data(), c.B, c.N, c.H, c.dh, c.P);
  in.out = rounded_to<bf16>(out);
  in.dqkv_cpu.assign(in.qkv.size(), 0.0f);
  cpu::attention_backward(in.dqkv_cpu.data(), in.dout.data(), in.qkv.data(), in.out.data(), in.lse.data(), c.B, c.N,
                          c.H, c.dh, c.P);
  return in;
}

void check_case(const Sm90BwdCase& c) {
  const int D = c.H * c.dh;
  const uint32_t seed = static_cast<uint32_t>(c.B * 1000003 + c.N * 1009 + c.H * 101 + c.dh * 7 + c.P);
  const Inputs in = make_inputs(c, seed);
  const std::vector<float> before = prefill_like(in.dqkv_cpu, seed + 2);

  DeviceBuffer<bf16> d_qkv(in.qkv), d_dout(in.dout), d_out(in.out), d_sm90(before), d_mma(before);
  DeviceBuffer<float> d_lse(in.lse);
  gpu::detail::attention_backward_sm90(d_sm90.ptr, d_dout.ptr, d_qkv.ptr, d_out.ptr, d_lse.ptr, c.B, c.N, c.H, c.dh,
                                       c.P, nullptr);
  {
    const bfm::test::ScopedEnv portable("BFM_ATTENTION_BWD", "mma");  // attention_backward would pick this variant
    gpu::attention_backward<bf16>(d_mma.ptr, d_dout.ptr, d_qkv.ptr, d_out.ptr, d_lse.ptr, c.B, c.N, c.H, c.dh, c.P,
                                  nullptr);
  }
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> sm90 = d_sm90.host(), mma = d_mma.host();
  EXPECT_EQ(count_nonfinite(sm90), 0u);
  EXPECT_EQ(count_nonfinite(mma), 0u);
  for (size_t i = 0; i < sm90.size(); ++i) {
    sm90[i] -= before[i];
    mma[i] -= before[i];
  }
  const double scale = rms(in.dqkv_cpu);
  std::printf("  %s\n", ::testing::PrintToString(c).c_str());
  const char* part[3] = {"dq", "dk", "dv"};
  for (int third = 0; third < 3; ++third) {
    const std::vector<float> want_cpu = third_of(in.dqkv_cpu, third, D);
    const bool vanishes = rms(want_cpu) <= 1e-6 * scale;
    const std::vector<float> got = third_of(sm90, third, D);
    expect_part_close(got, want_cpu, vanishes, std::string(part[third]) + " vs CPU twin");
    expect_part_close(got, third_of(mma, third, D), vanishes, std::string(part[third]) + " vs mma backward");
  }
}

class CudaAttentionSm90BwdTest : public ::testing::TestWithParam<Sm90BwdCase> {};

TEST_P(CudaAttentionSm90BwdTest, MatchesCpuTwinAndMmaBackward) {
  SKIP_WITHOUT_SM90_BWD(GetParam().dh);
  check_case(GetParam());
}

// Blocks own 128 keys (dK/dV) or 128 queries (dQ), two warpgroups of 64; streamed tiles are 64 rows. The lengths
// end inside tiles of every size and leave whole warpgroups past N.
INSTANTIATE_TEST_SUITE_P(
    Bidirectional, CudaAttentionSm90BwdTest,
    ::testing::Values(Sm90BwdCase{2, 1, 2, 64, 0, 2.0f},     // a single token: dq = dk = 0
                      Sm90BwdCase{2, 1, 2, 128, 0, 2.0f},
                      Sm90BwdCase{2, 37, 3, 64, 0, 2.0f},    // one partial tile; warpgroup 1 wholly past N
                      Sm90BwdCase{2, 37, 2, 128, 0, 2.0f},
                      Sm90BwdCase{2, 130, 2, 64, 0, 2.0f},   // two rows into the next block
                      Sm90BwdCase{2, 130, 2, 128, 0, 2.0f},
                      Sm90BwdCase{1, 257, 2, 64, 0, 4.0f},   // scores of tens: sharp softmax rows
                      Sm90BwdCase{2, 257, 2, 128, 0, 2.0f},
                      Sm90BwdCase{1, 300, 2, 64, 0, 2.0f},
                      Sm90BwdCase{1, 520, 1, 128, 0, 2.0f}),  // 5 blocks, 9 streamed tiles
    case_name);

INSTANTIATE_TEST_SUITE_P(
    TimeCausal, CudaAttentionSm90BwdTest,
    ::testing::Values(Sm90BwdCase{2, 300, 2, 64, 100, 2.0f},   // whole tiles in the future are skipped
                      Sm90BwdCase{2, 300, 2, 128, 100, 2.0f},
                      Sm90BwdCase{2, 185, 2, 64, 37, 2.0f},    // 5 patches straddling every tile size
                      Sm90BwdCase{2, 185, 2, 128, 37, 2.0f},
                      Sm90BwdCase{2, 1, 2, 64, 1, 2.0f},
                      Sm90BwdCase{1, 257, 2, 128, 1, 2.0f},    // P = 1: token-causal
                      Sm90BwdCase{2, 256, 2, 64, 64, 2.0f},    // patches aligned with the streamed tiles
                      Sm90BwdCase{1, 384, 2, 128, 128, 2.0f},  // patches aligned with the blocks (no masking)
                      Sm90BwdCase{1, 100, 2, 128, 7, 2.0f},    // P does not divide N: the last patch is short
                      Sm90BwdCase{1, 130, 2, 64, 424, 2.0f}),  // one patch longer than N: sees everything
    case_name);

// Backward twice from the same start gives the same bits: one writer per gradient element, fixed summation order.
void check_repeats(int dh) {
  const Sm90BwdCase c{2, 203, 2, dh, 29, 2.0f};
  const Inputs in = make_inputs(c, 11u + uint32_t(dh));
  const std::vector<float> before = rounded_to<bf16>(random_floats(in.qkv.size(), 13));
  DeviceBuffer<bf16> d_qkv(in.qkv), d_dout(in.dout), d_out(in.out), d_first(before), d_second(before);
  DeviceBuffer<float> d_lse(in.lse);
  gpu::detail::attention_backward_sm90(d_first.ptr, d_dout.ptr, d_qkv.ptr, d_out.ptr, d_lse.ptr, c.B, c.N, c.H, c.dh,
                                       c.P, nullptr);
  gpu::detail::attention_backward_sm90(d_second.ptr, d_dout.ptr, d_qkv.ptr, d_out.ptr, d_lse.ptr, c.B, c.N, c.H,
                                       c.dh, c.P, nullptr);
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  std::vector<bf16> first(in.qkv.size()), second(in.qkv.size());
  ASSERT_CUDA_OK(cudaMemcpy(first.data(), d_first.ptr, first.size() * sizeof(bf16), cudaMemcpyDeviceToHost));
  ASSERT_CUDA_OK(cudaMemcpy(second.data(), d_second.ptr, second.size() * sizeof(bf16), cudaMemcpyDeviceToHost));
  EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(bf16)), 0);
  EXPECT_EQ(count_nonfinite(d_first.host()), 0u);
}

TEST(CudaAttentionSm90BwdDeterminism, RepeatsBitForBitDh64) {
  SKIP_WITHOUT_SM90_BWD(64);
  check_repeats(64);
}

TEST(CudaAttentionSm90BwdDeterminism, RepeatsBitForBitDh128) {
  SKIP_WITHOUT_SM90_BWD(128);
  check_repeats(128);
}

// On a device of compute capability 9.0 the variant must be there for dh 64 and 128 (a skip would hide a build
// that lost its sm_90a image); dh 32 never is, anywhere.
TEST(CudaAttentionSm90BwdSetup, AvailableOnHopper) {
  EXPECT_FALSE(gpu::detail::attention_backward_sm90_available(32));
  SKIP_WITHOUT_GPU();
  if (!device_is_sm90()) GTEST_SKIP() << "the GPU is not of compute capability 9.0";
  EXPECT_TRUE(gpu::detail::attention_backward_sm90_available(64));
  EXPECT_TRUE(gpu::detail::attention_backward_sm90_available(128));
}

// Unsupported head sizes are refused before anything touches the GPU, naming the value.
TEST(CudaAttentionSm90BwdSetup, RejectsHeadDim32) {
  try {
    gpu::detail::attention_backward_sm90(nullptr, nullptr, nullptr, nullptr, nullptr, 1, 4, 1, 32, 0, nullptr);
    ADD_FAILURE() << "dh=32 was accepted";
  } catch (const bfm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("32"), std::string::npos) << e.what();
  }
}

}  // namespace
