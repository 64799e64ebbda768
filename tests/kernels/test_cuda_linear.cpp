// cuBLASLt linear layers against the CPU twin (OpenBLAS where the build has it) on the same inputs rounded to the
// mode's element type: forward with and without bias, the fused GELU epilogue, and every gradient, with gradient
// buffers pre-filled so that the += shows.
#include <gtest/gtest.h>

#include <vector>

#include "cuda_test_util.h"
#include "kernels/gelu.h"
#include "kernels/linear.h"
#include "reference.h"

namespace {

using bfm::test::DeviceBuffer;
using bfm::test::norm_rel_error;
using bfm::test::random_floats;
using bfm::test::rounded_to;
using bfm::kernels::cuda::bf16;

struct Shape {
  int64_t M;
  int in, out;
};

template <typename T>
void check_linear(const Shape& s, bool bias, bool gelu, uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "M=" << s.M << " in=" << s.in << " out=" << s.out << " bias=" << bias
                                  << " gelu=" << gelu << (std::is_same_v<T, float> ? " float" : " bf16"));
  const double tol = bfm::test::mode_tolerance<T>();
  const auto x = rounded_to<T>(random_floats(s.M * s.in, seed));
  const auto w = rounded_to<T>(random_floats(int64_t(s.out) * s.in, seed + 1, -0.3f, 0.3f));
  const auto b = rounded_to<T>(random_floats(s.out, seed + 2));
  // forward on the CPU: pre = x W^T + b, y = gelu(pre) or pre
  std::vector<float> pre(s.M * s.out), y(s.M * s.out);
  bfm::kernels::cpu::linear_forward(pre.data(), x.data(), w.data(), bias ? b.data() : nullptr, s.M, s.in, s.out);
  if (gelu) bfm::kernels::cpu::gelu_forward(y.data(), pre.data(), s.M * s.out);
  else y = pre;

  DeviceBuffer<T> d_x(x), d_w(w), d_b(b), d_y(s.M * s.out), d_pre(s.M * s.out);
  bfm::kernels::cuda::linear_forward<T>(d_y.ptr, d_x.ptr, d_w.ptr, bias ? d_b.ptr : nullptr, s.M, s.in, s.out, 0,
                                        gelu ? d_pre.ptr : nullptr);
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  const auto got_y = d_y.host();
  EXPECT_EQ(bfm::test::count_nonfinite(got_y), 0u);
  EXPECT_LT(norm_rel_error(got_y, y), tol);
  if (gelu) {
    EXPECT_LT(norm_rel_error(d_pre.host(), pre), tol);
  }

  // backward: dx += dy W, dw += dy^T x, db += colsum(dy)
  const auto dy = rounded_to<T>(random_floats(s.M * s.out, seed + 3));
  const auto dx0 = rounded_to<T>(random_floats(s.M * s.in, seed + 4));
  const auto dw0 = random_floats(int64_t(s.out) * s.in, seed + 5);
  const auto db0 = random_floats(s.out, seed + 6);
  std::vector<float> dx = dx0, dw = dw0, db = db0;
  bfm::kernels::cpu::linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), s.M, s.in,
                                     s.out);
  DeviceBuffer<T> d_dy(dy), d_dx(dx0);
  DeviceBuffer<float> d_dw(dw0), d_db(db0);
  bfm::kernels::cuda::linear_backward<T>(d_dx.ptr, d_dw.ptr, d_db.ptr, d_dy.ptr, d_x.ptr, d_w.ptr, s.M, s.in, s.out,
                                         0);
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  // Compare the added parts: (got - before) against (want - before).
  auto added = [](std::vector<float> v, const std::vector<float>& before) {
    for (size_t i = 0; i < v.size(); ++i) v[i] -= before[i];
    return v;
  };
  EXPECT_LT(norm_rel_error(added(d_dx.host(), dx0), added(dx, dx0)), tol) << "dx";
  // dw and db are fp32 sums of products of T inputs: float accuracy up to the accumulation order.
  const double dw_tol = std::is_same_v<T, float> ? 2e-5 : 2e-3;
  EXPECT_LT(norm_rel_error(added(d_dw.host(), dw0), added(dw, dw0)), dw_tol) << "dw";
  EXPECT_LT(norm_rel_error(added(d_db.host(), db0), added(db, db0)), 2e-5) << "db";

  // accumulate_dx = false overwrites dx (its poison must vanish).
  DeviceBuffer<T> d_dx_over(s.M * s.in);
  bfm::kernels::cuda::linear_backward<T>(d_dx_over.ptr, nullptr, nullptr, d_dy.ptr, d_x.ptr, d_w.ptr, s.M, s.in,
                                         s.out, 0, /*accumulate_dx=*/false);
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_LT(norm_rel_error(d_dx_over.host(), added(dx, dx0)), tol) << "dx overwritten";

  // The GELU backward fused into the dx GEMM: dx = gelu'(pre) * (dy W), pre [M, in] (a layer below whose GELU
  // output was this layer's x).
  if (gelu) {
    const auto pre_in = rounded_to<T>(random_floats(s.M * s.in, seed + 7, -3.0f, 3.0f));
    std::vector<float> dx_plain(s.M * s.in, 0.0f), want(s.M * s.in, 0.0f), dw_unused(int64_t(s.out) * s.in);
    bfm::kernels::cpu::linear_backward(dx_plain.data(), dw_unused.data(), nullptr, dy.data(), x.data(), w.data(), s.M,
                                       s.in, s.out);
    // want = gelu'(pre) * dx_plain, through the CPU gelu_backward (which adds dy * gelu'(x) into dx).
    bfm::kernels::cpu::gelu_backward(want.data(), dx_plain.data(), pre_in.data(), s.M * s.in);
    DeviceBuffer<T> d_pre_in(pre_in), d_dx_gelu(s.M * s.in);
    bfm::kernels::cuda::linear_backward<T>(d_dx_gelu.ptr, nullptr, nullptr, d_dy.ptr, d_x.ptr, d_w.ptr, s.M, s.in,
                                           s.out, 0, false, d_pre_in.ptr);
    ASSERT_CUDA_OK(cudaDeviceSynchronize());
    EXPECT_LT(norm_rel_error(d_dx_gelu.host(), want), tol) << "dx with the fused GELU backward";
  }
}

const Shape kShapes[] = {{1, 8, 8}, {77, 40, 24}, {300, 64, 192}, {1000, 96, 384}, {513, 256, 64}};

TEST(CudaLinearTest, FloatMatchesCpu) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 10;
  for (const Shape& s : kShapes)
    for (bool bias : {false, true})
      for (bool gelu : {false, true}) check_linear<float>(s, bias, gelu, seed += 10);
}

TEST(CudaLinearTest, Bf16MatchesCpu) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 1000;
  for (const Shape& s : kShapes)
    for (bool bias : {false, true})
      for (bool gelu : {false, true}) check_linear<bf16>(s, bias, gelu, seed += 10);
}

TEST(CudaLinearTest, BiasGradientIsDeterministic) {
  SKIP_WITHOUT_GPU();
  const int64_t M = 5000;
  const int in = 32, out = 96;
  DeviceBuffer<bf16> x(random_floats(M * in, 1)), w(random_floats(out * in, 2)), dy(random_floats(M * out, 3));
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<float> dw(std::vector<float>(out * in, 0.0f)), db(std::vector<float>(out, 0.0f));
    bfm::kernels::cuda::linear_backward<bf16>(nullptr, dw.ptr, db.ptr, dy.ptr, x.ptr, w.ptr, M, in, out, 0);
    ASSERT_CUDA_OK(cudaDeviceSynchronize());
    auto got = db.host();
    if (run == 0) first = got;
    else EXPECT_EQ(got, first);
  }
}

}  // namespace
