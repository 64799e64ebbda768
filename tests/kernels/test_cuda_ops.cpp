// The CUDA twins of the elementwise, normalisation, embedding, loss and optimizer kernels against their CPU oracle
// (kernels/cpu/*.cpp), for T = float and bf16: the CPU runs on the inputs rounded to T, the GPU writes into buffers
// poisoned with NaN, gradient buffers start pre-filled with random values of the gradient's size (so a missing +=
// shows), and each result must match within the mode's tolerance with no NaN. Sizes are odd on purpose (C not a
// multiple of 8 or 32, rows not a multiple of a block, shuffled token indices); the reductions that must repeat bit
// for bit are run twice. Every test skips itself (and says so) where there is no GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/adamw.h"
#include "kernels/contrastive.h"
#include "kernels/gelu.h"
#include "kernels/layernorm.h"
#include "kernels/mask_fill.h"
#include "kernels/mean_pool.h"
#include "kernels/mse_loss.h"
#include "kernels/patch_embed.h"
#include "kernels/residual.h"
#include "reference.h"
#include "runtime/optimizer.h"

namespace {

using namespace bfm::test;
namespace cpu = bfm::kernels::cpu;
namespace gpu = bfm::kernels::cuda;
using gpu::bf16;

template <typename T>
class CudaOpsTest : public ::testing::Test {};
struct ElementTypeNames {
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, float> ? "float" : "bf16";
  }
};
using ElementTypes = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(CudaOpsTest, ElementTypes, ElementTypeNames);

// got matches want within tol (norm-wise relative error) and holds no NaN or inf (an unwritten poisoned element).
void expect_matches(const std::vector<float>& got, const std::vector<float>& want, double tol, const char* what) {
  EXPECT_EQ(count_nonfinite(got), 0u) << what;
  EXPECT_LT(norm_rel_error(got, want), tol) << what;
}

void sync_ok() { ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << cudaGetErrorString(cudaGetLastError()); }

// A gradient buffer's starting values (random, of the size of `grad`, rounded to the buffer's type U) and what it
// must hold after a backward that adds `grad` into it.
struct Prefilled {
  std::vector<float> before, want;
};
template <typename U>
Prefilled prefilled(const std::vector<float>& grad, uint32_t seed) {
  float scale = 0.0f;
  for (float g : grad) scale = std::max(scale, std::abs(g));
  if (scale == 0.0f) scale = 1.0f;  // an all-zero gradient: the buffer must still keep its values
  std::vector<float> before = random_floats(grad.size(), seed);
  for (float& x : before) x *= scale;
  before = rounded_to<U>(before);
  std::vector<float> want(grad.size());
  for (size_t i = 0; i < grad.size(); ++i) want[i] = before[i] + grad[i];
  return {before, want};
}

// Per sample, `count` distinct positions out of [0, N) in a shuffled order (the kernels must not assume sorted).
std::vector<int32_t> shuffled_subsets(int B, int N, int count, uint32_t seed) {
  std::vector<int32_t> ids = random_token_subsets(B, N, count, seed);
  std::mt19937 rng(seed + 1000);
  for (int b = 0; b < B; ++b) std::shuffle(ids.begin() + int64_t(b) * count, ids.begin() + int64_t(b + 1) * count, rng);
  return ids;
}

// ---- gelu, residual ----

TYPED_TEST(CudaOpsTest, GeluMatchesCpu) {
  SKIP_WITHOUT_GPU();
  using T = TypeParam;
  const double tol = mode_tolerance<T>();
  const int64_t n = 100003;  // not a multiple of the block or of a 16-byte pack
  const auto x = rounded_to<T>(random_floats(n, 101, -6.0f, 6.0f));
  const auto dy = rounded_to<T>(random_floats(n, 102));
  std::vector<float> y(n), grad(n, 0.0f);
  cpu::gelu_forward(y.data(), x.data(), n);
  cpu::gelu_backward(grad.data(), dy.data(), x.data(), n);
  const Prefilled dx = prefilled<T>(grad, 103);

  DeviceBuffer<T> d_x(x), d_y(n), d_dy(dy), d_dx(dx.before);
  gpu::gelu_forward<T>(d_y.ptr, d_x.ptr, n, 0);
  gpu::gelu_backward<T>(d_dx.ptr, d_dy.ptr, d_x.ptr, n, 0);
  sync_ok();
  expect_matches(d_y.host(), y, tol, "y");
  expect_matches(d_dx.host(), dx.want, tol, "dx");

  // Pointers one element past a 16-byte boundary take the scalar path.
  DeviceBuffer<T> d_y1(n), d_dx1(dx.before);
  gpu::gelu_forward<T>(d_y1.ptr + 1, d_x.ptr + 1, n - 1, 0);
  gpu::gelu_backward<T>(d_dx1.ptr + 1, d_dy.ptr + 1, d_x.ptr + 1, n - 1, 0);
  sync_ok();
  const auto y1 = d_y1.host(), dx1 = d_dx1.host();
  expect_matches(std::vector<float>(y1.begin() + 1, y1.end()), std::vector<float>(y.begin() + 1, y.end()), tol,
                 "y (unaligned)");
  EXPECT_EQ(dx1[0], dx.before[0]) << "element before the unaligned range";
  expect_matches(std::vector<float>(dx1.begin() + 1, dx1.end()), std::vector<float>(dx.want.begin() + 1, dx.want.end()),
                 tol, "dx (unaligned)");
}

TYPED_TEST(CudaOpsTest, ResidualMatchesCpuAlsoInPlace) {
  SKIP_WITHOUT_GPU();
  using T = TypeParam;
  const double tol = mode_tolerance<T>();
  const int64_t n = 4099;
  const auto a = rounded_to<T>(random_floats(n, 111));
  const auto b = rounded_to<T>(random_floats(n, 112));
  std::vector<float> out(n);
  cpu::residual_forward(out.data(), a.data(), b.data(), n);

  DeviceBuffer<T> d_a(a), d_b(b), d_out(n);
  gpu::residual_forward<T>(d_out.ptr, d_a.ptr, d_b.ptr, n, 0);
  sync_ok();
  expect_matches(d_out.host(), out, tol, "out");
  gpu::residual_forward<T>(d_a.ptr, d_a.ptr, d_b.ptr, n, 0);  // h = h + f(h)
  sync_ok();
  expect_matches(d_a.host(), out, tol, "out aliasing a");
  DeviceBuffer<T> d_a1(a), d_out1(n);
  gpu::residual_forward<T>(d_out1.ptr + 1, d_a1.ptr + 1, d_b.ptr + 1, n - 1, 0);  // the unaligned path
  sync_ok();
  const auto out1 = d_out1.host();
  expect_matches(std::vector<float>(out1.begin() + 1, out1.end()), std::vector<float>(out.begin() + 1, out.end()),
                 tol, "out (unaligned)");
}

// ---- layernorm ----

template <typename T>
void check_layernorm(int64_t M, int C, uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "M=" << M << " C=" << C);
  const double tol = mode_tolerance<T>();
  const float eps = 1e-5f;
  auto x = random_floats(M * C, seed, -2.0f, 2.0f);
  for (int64_t r = 0; r < M; ++r)
    for (int c = 0; c < C; ++c) x[r * C + c] += 0.5f * float(r % 5);  // rows with different means
  x = rounded_to<T>(x);
  const auto w = random_floats(C, seed + 1, 0.5f, 1.5f);
  const auto b = random_floats(C, seed + 2, -0.5f, 0.5f);
  std::vector<float> y(M * C), mean(M), rstd(M);
  cpu::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), M, C, eps);

  DeviceBuffer<T> d_x(x), d_y(M * C);
  DeviceBuffer<float> d_w(w), d_b(b), d_mean(M), d_rstd(M);
  gpu::layernorm_forward<T>(d_y.ptr, d_mean.ptr, d_rstd.ptr, d_x.ptr, d_w.ptr, d_b.ptr, M, C, eps, 0);
  sync_ok();
  expect_matches(d_y.host(), y, tol, "y");
  expect_matches(d_mean.host(), mean, mode_tolerance<float>(), "mean");
  expect_matches(d_rstd.host(), rstd, mode_tolerance<float>(), "rstd");

  // Backward from the CPU's statistics (uploaded), so both sides see the same inputs.
  const auto dy = rounded_to<T>(random_floats(M * C, seed + 3));
  std::vector<float> gx(M * C, 0.0f), gw(C, 0.0f), gb(C, 0.0f);
  cpu::layernorm_backward(gx.data(), gw.data(), gb.data(), dy.data(), x.data(), w.data(), mean.data(), rstd.data(), M,
                          C);
  const Prefilled dx = prefilled<T>(gx, seed + 4), dw = prefilled<float>(gw, seed + 5),
                  db = prefilled<float>(gb, seed + 6);
  d_mean.upload(mean);
  d_rstd.upload(rstd);
  DeviceBuffer<T> d_dy(dy), d_dx(dx.before);
  DeviceBuffer<float> d_dw(dw.before), d_db(db.before);
  gpu::layernorm_backward<T>(d_dx.ptr, d_dw.ptr, d_db.ptr, d_dy.ptr, d_x.ptr, d_w.ptr, d_mean.ptr, d_rstd.ptr, M, C, 0);
  sync_ok();
  const auto got_dx = d_dx.host(), got_dw = d_dw.host(), got_db = d_db.host();
  expect_matches(got_dx, dx.want, tol, "dx");
  expect_matches(got_dw, dw.want, tol, "dw");
  expect_matches(got_db, db.want, tol, "db");

  // Again from the same starting values: the same bits.
  d_dx.upload(dx.before);
  d_dw.upload(dw.before);
  d_db.upload(db.before);
  gpu::layernorm_backward<T>(d_dx.ptr, d_dw.ptr, d_db.ptr, d_dy.ptr, d_x.ptr, d_w.ptr, d_mean.ptr, d_rstd.ptr, M, C, 0);
  sync_ok();
  EXPECT_EQ(d_dx.host(), got_dx) << "dx repeats bit for bit";
  EXPECT_EQ(d_dw.host(), got_dw) << "dw repeats bit for bit";
  EXPECT_EQ(d_db.host(), got_db) << "db repeats bit for bit";

  // dw, db alone (dx null) and db alone.
  DeviceBuffer<float> d_dw2(dw.before), d_db2(db.before);
  gpu::layernorm_backward<T>(nullptr, d_dw2.ptr, nullptr, d_dy.ptr, d_x.ptr, d_w.ptr, d_mean.ptr, d_rstd.ptr, M, C, 0);
  gpu::layernorm_backward<T>(nullptr, nullptr, d_db2.ptr, d_dy.ptr, d_x.ptr, d_w.ptr, d_mean.ptr, d_rstd.ptr, M, C, 0);
  sync_ok();
  EXPECT_EQ(d_dw2.host(), got_dw) << "dw without dx, db";
  EXPECT_EQ(d_db2.host(), got_db) << "db without dx, dw";
}

TYPED_TEST(CudaOpsTest, LayerNormMatchesCpuAndRepeats) {
  SKIP_WITHOUT_GPU();
  check_layernorm<TypeParam>(77, 203, 120);    // rows not a multiple of 8, C not of 8 or 32
  check_layernorm<TypeParam>(301, 1000, 130);  // several row chunks, a ragged last one
  check_layernorm<TypeParam>(9000, 64, 140);   // the maximum number of chunks
  check_layernorm<TypeParam>(3000, 768, 150);  // the one-pass path at a model width (bf16: 3 vectors per lane)
  check_layernorm<TypeParam>(517, 512, 160);   // the one-pass path, ragged row blocks
}

// ---- patchify, patch_embed ----

TEST(CudaOpsPatchifyTest, MatchesCpuExactly) {
  SKIP_WITHOUT_GPU();
  const int B = 3, T = 24, P = 7, L = 4;
  const auto x = random_floats(size_t(B) * T * P, 150);
  std::vector<float> patches(x.size());
  cpu::patchify(patches.data(), x.data(), B, T, P, L);
  DeviceBuffer<float> d_x(x), d_patches(x.size());
  gpu::patchify(d_patches.ptr, d_x.ptr, B, T, P, L, 0);
  sync_ok();
  EXPECT_EQ(d_patches.host(), patches);
}

struct EmbedShape {
  int B, n_t, P, L, D, n_tok;  // n_tok = 0: every token, no token_index
};

template <typename T>
void check_patch_embed(const EmbedShape& s, bool all_grads, uint32_t seed) {
  const int N = s.n_t * s.P;
  const bool subset = s.n_tok > 0;
  const int n_tok = subset ? s.n_tok : N;
  SCOPED_TRACE(testing::Message() << "B=" << s.B << " N=" << N << " n_tok=" << n_tok << " P=" << s.P << " L=" << s.L
                                  << " D=" << s.D << " all_grads=" << all_grads);
  const double tol = mode_tolerance<T>();
  const int64_t rows = int64_t(s.B) * n_tok;
  const auto patches = random_floats(size_t(s.B) * N * s.L, seed);
  const auto w = random_floats(size_t(s.D) * s.L, seed + 1, -0.5f, 0.5f);
  const auto b = random_floats(s.D, seed + 2);
  const auto pe = random_floats(size_t(s.P) * s.D, seed + 3);
  const auto te = random_floats(size_t(s.n_t) * s.D, seed + 4);
  const std::vector<int32_t> index = subset ? shuffled_subsets(s.B, N, n_tok, seed + 5) : std::vector<int32_t>{};
  const int32_t* cpu_index = subset ? index.data() : nullptr;
  std::vector<float> out(rows * s.D);
  cpu::patch_embed_forward(out.data(), patches.data(), w.data(), b.data(), pe.data(), te.data(), cpu_index, s.B, N,
                           n_tok, s.P, s.L, s.D);

  DeviceBuffer<float> d_patches(patches), d_w(w), d_b(b), d_pe(pe), d_te(te);
  DeviceArray<int32_t> d_index(index);
  const int32_t* gpu_index = subset ? d_index.ptr : nullptr;
  DeviceBuffer<T> d_out(rows * s.D);
  gpu::patch_embed_forward<T>(d_out.ptr, d_patches.ptr, d_w.ptr, d_b.ptr, d_pe.ptr, d_te.ptr, gpu_index, s.B, N,
                              n_tok, s.P, s.L, s.D, 0);
  sync_ok();
  expect_matches(d_out.host(), out, tol, "out");

  const auto dout = rounded_to<T>(random_floats(rows * s.D, seed + 6));
  std::vector<float> gw(w.size(), 0.0f), gb(b.size(), 0.0f), gpe(pe.size(), 0.0f), gte(te.size(), 0.0f);
  cpu::patch_embed_backward(gw.data(), all_grads ? gb.data() : nullptr, gpe.data(), all_grads ? gte.data() : nullptr,
                            dout.data(), patches.data(), cpu_index, s.B, N, n_tok, s.P, s.L, s.D);
  const Prefilled dw = prefilled<float>(gw, seed + 7), db = prefilled<float>(gb, seed + 8),
                  dpe = prefilled<float>(gpe, seed + 9), dte = prefilled<float>(gte, seed + 10);
  DeviceBuffer<T> d_dout(dout);
  DeviceBuffer<float> d_dw(dw.before), d_db(db.before), d_dpe(dpe.before), d_dte(dte.before);
  const auto run = [&] {
    gpu::patch_embed_backward<T>(d_dw.ptr, all_grads ? d_db.ptr : nullptr, d_dpe.ptr, all_grads ? d_dte.ptr : nullptr,
                                 d_dout.ptr, d_patches.ptr, gpu_index, s.B, N, n_tok, s.P, s.L, s.D, 0);
  };
  run();
  sync_ok();
  const auto got_dw = d_dw.host(), got_db = d_db.host(), got_dpe = d_dpe.host(), got_dte = d_dte.host();
  expect_matches(got_dw, dw.want, tol, "dw");
  expect_matches(got_dpe, dpe.want, tol, "dparcel_embed");
  if (all_grads) {
    expect_matches(got_db, db.want, tol, "db");
    expect_matches(got_dte, dte.want, tol, "dtime_embed");
  } else {
    EXPECT_EQ(got_db, db.before) << "db not asked for";
    EXPECT_EQ(got_dte, dte.before) << "dtime_embed not asked for";
  }

  // Again from the same starting values: the same bits.
  d_dw.upload(dw.before);
  d_db.upload(db.before);
  d_dpe.upload(dpe.before);
  d_dte.upload(dte.before);
  run();
  sync_ok();
  EXPECT_EQ(d_dw.host(), got_dw) << "dw repeats bit for bit";
  EXPECT_EQ(d_db.host(), got_db) << "db repeats bit for bit";
  EXPECT_EQ(d_dpe.host(), got_dpe) << "dparcel_embed repeats bit for bit";
  EXPECT_EQ(d_dte.host(), got_dte) << "dtime_embed repeats bit for bit";
}

TYPED_TEST(CudaOpsTest, PatchEmbedMatchesCpuAndRepeats) {
  SKIP_WITHOUT_GPU();
  check_patch_embed<TypeParam>({3, 5, 7, 6, 45, 0}, true, 160);    // every token: 2 row chunks, 2 column tiles
  check_patch_embed<TypeParam>({3, 5, 7, 6, 45, 13}, true, 170);   // a shuffled subset of tokens
  check_patch_embed<TypeParam>({2, 4, 5, 3, 33, 9}, false, 180);   // db and dtime_embed null
  check_patch_embed<TypeParam>({4, 8, 64, 8, 96, 128}, true, 190); // the model's patch layout, MAE-visible tokens
}

// ---- mask_fill ----

template <typename T>
void check_mask_fill(int B, int n_t, int P, int D, int n_vis, uint32_t seed) {
  const int N = n_t * P;
  SCOPED_TRACE(testing::Message() << "B=" << B << " N=" << N << " n_vis=" << n_vis << " P=" << P << " D=" << D);
  const double tol = mode_tolerance<T>();
  const auto z = rounded_to<T>(random_floats(size_t(B) * n_vis * D, seed));
  const auto mask_token = random_floats(D, seed + 1);
  const auto pe = random_floats(size_t(P) * D, seed + 2);
  const auto te = random_floats(size_t(n_t) * D, seed + 3);
  const auto index = shuffled_subsets(B, N, n_vis, seed + 4);
  std::vector<float> out(size_t(B) * N * D);
  cpu::mask_fill_forward(out.data(), z.data(), mask_token.data(), pe.data(), te.data(), index.data(), B, N, n_vis, P,
                         D);
  DeviceBuffer<T> d_z(z), d_out(out.size());
  DeviceBuffer<float> d_mask(mask_token), d_pe(pe), d_te(te);
  DeviceArray<int32_t> d_index(index);
  gpu::mask_fill_forward<T>(d_out.ptr, d_z.ptr, d_mask.ptr, d_pe.ptr, d_te.ptr, d_index.ptr, B, N, n_vis, P, D, 0);
  sync_ok();
  expect_matches(d_out.host(), out, tol, "out");

  const auto dout = rounded_to<T>(random_floats(out.size(), seed + 5));
  std::vector<float> gz(z.size(), 0.0f), gmask(D, 0.0f), gpe(pe.size(), 0.0f), gte(te.size(), 0.0f);
  cpu::mask_fill_backward(gz.data(), gmask.data(), gpe.data(), gte.data(), dout.data(), index.data(), B, N, n_vis, P,
                          D);
  const Prefilled dz = prefilled<T>(gz, seed + 6), dmask = prefilled<float>(gmask, seed + 7),
                  dpe = prefilled<float>(gpe, seed + 8), dte = prefilled<float>(gte, seed + 9);
  DeviceBuffer<T> d_dout(dout), d_dz(dz.before);
  DeviceBuffer<float> d_dmask(dmask.before), d_dpe(dpe.before), d_dte(dte.before);
  gpu::mask_fill_backward<T>(d_dz.ptr, d_dmask.ptr, d_dpe.ptr, d_dte.ptr, d_dout.ptr, d_index.ptr, B, N, n_vis, P, D,
                             0);
  sync_ok();
  const auto got_dmask = d_dmask.host(), got_dpe = d_dpe.host(), got_dte = d_dte.host();
  if (n_vis > 0) expect_matches(d_dz.host(), dz.want, tol, "dz");
  expect_matches(got_dmask, dmask.want, tol, "dmask_token");
  expect_matches(got_dpe, dpe.want, tol, "dparcel_embed");
  expect_matches(got_dte, dte.want, tol, "dtime_embed");

  // Again from the same starting values: the same bits.
  d_dmask.upload(dmask.before);
  d_dpe.upload(dpe.before);
  d_dte.upload(dte.before);
  gpu::mask_fill_backward<T>(nullptr, d_dmask.ptr, d_dpe.ptr, d_dte.ptr, d_dout.ptr, d_index.ptr, B, N, n_vis, P, D,
                             0);
  sync_ok();
  EXPECT_EQ(d_dmask.host(), got_dmask) << "dmask_token repeats bit for bit";
  EXPECT_EQ(d_dpe.host(), got_dpe) << "dparcel_embed repeats bit for bit";
  EXPECT_EQ(d_dte.host(), got_dte) << "dtime_embed repeats bit for bit";
}

TYPED_TEST(CudaOpsTest, MaskFillMatchesCpuAndRepeats) {
  SKIP_WITHOUT_GPU();
  check_mask_fill<TypeParam>(3, 4, 5, 37, 7, 200);     // shuffled visible positions
  check_mask_fill<TypeParam>(2, 3, 4, 19, 0, 210);     // nothing visible: every position is the mask token
  check_mask_fill<TypeParam>(4, 8, 64, 96, 128, 220);  // the model's layout at a 75% mask ratio
}

// ---- mean_pool ----

TYPED_TEST(CudaOpsTest, MeanPoolMatchesCpu) {
  SKIP_WITHOUT_GPU();
  using T = TypeParam;
  const double tol = mode_tolerance<T>();
  const int B = 3, n = 37, D = 70;
  const auto x = rounded_to<T>(random_floats(size_t(B) * n * D, 230));
  std::vector<float> pooled(size_t(B) * D);
  cpu::mean_pool_forward(pooled.data(), x.data(), B, n, D);
  DeviceBuffer<T> d_x(x), d_pooled(pooled.size());
  gpu::mean_pool_forward<T>(d_pooled.ptr, d_x.ptr, B, n, D, 0);
  sync_ok();
  expect_matches(d_pooled.host(), pooled, tol, "pooled");

  const auto dpooled = rounded_to<T>(random_floats(pooled.size(), 231));
  std::vector<float> gx(x.size(), 0.0f);
  cpu::mean_pool_backward(gx.data(), dpooled.data(), B, n, D);
  const Prefilled dx = prefilled<T>(gx, 232);
  DeviceBuffer<T> d_dpooled(dpooled), d_dx(dx.before);
  gpu::mean_pool_backward<T>(d_dx.ptr, d_dpooled.ptr, B, n, D, 0);
  sync_ok();
  expect_matches(d_dx.host(), dx.want, tol, "dx");
}

// ---- losses ----

// |got - want| / |want| for scalars (want non-zero).
double scalar_rel_error(float got, double want) { return std::abs(double(got) - want) / std::abs(want); }

template <typename T>
void check_masked_mse(int B, int N, int L, double mask_ratio, uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "B=" << B << " N=" << N << " L=" << L << " mask_ratio=" << mask_ratio);
  const double tol = mode_tolerance<T>();
  const float dloss = 0.7f;
  const size_t n = size_t(B) * N * L;
  const auto pred = rounded_to<T>(random_floats(n, seed));
  const auto target = random_floats(n, seed + 1);
  std::vector<uint8_t> mask(size_t(B) * N);
  std::mt19937 rng(seed + 2);
  std::bernoulli_distribution masked(mask_ratio);
  for (auto& m : mask) m = masked(rng) ? uint8_t(1 + rng() % 200) : uint8_t(0);  // any non-zero byte masks
  const float loss = cpu::masked_mse_forward(pred.data(), target.data(), mask.data(), B, N, L);
  std::vector<float> gpred(n, 0.0f);
  cpu::masked_mse_backward(gpred.data(), pred.data(), target.data(), mask.data(), B, N, L, dloss);
  const Prefilled dpred = prefilled<T>(gpred, seed + 3);

  DeviceBuffer<T> d_pred(pred), d_dpred(dpred.before);
  DeviceBuffer<float> d_target(target), d_loss(1), d_loss2(1);
  DeviceArray<uint8_t> d_mask(mask);
  gpu::masked_mse<T>(d_loss.ptr, d_dpred.ptr, d_pred.ptr, d_target.ptr, d_mask.ptr, B, N, L, dloss, 0);
  gpu::masked_mse<T>(d_loss2.ptr, nullptr, d_pred.ptr, d_target.ptr, d_mask.ptr, B, N, L, dloss, 0);  // loss only
  sync_ok();
  const float got = d_loss.host()[0];
  if (loss == 0.0f) {
    EXPECT_EQ(got, 0.0f) << "no masked token";
    EXPECT_EQ(d_dpred.host(), dpred.before) << "no masked token: no gradient";
  } else {
    EXPECT_LT(scalar_rel_error(got, loss), mode_tolerance<float>()) << "loss " << got << " vs " << loss;
    expect_matches(d_dpred.host(), dpred.want, tol, "dpred");
  }
  EXPECT_EQ(d_loss2.host()[0], got) << "the loss does not depend on dpred";
}

TYPED_TEST(CudaOpsTest, MaskedMseMatchesCpu) {
  SKIP_WITHOUT_GPU();
  check_masked_mse<TypeParam>(3, 41, 7, 0.4, 240);
  check_masked_mse<TypeParam>(8, 512, 16, 0.75, 250);  // many blocks of partials
  check_masked_mse<TypeParam>(2, 33, 5, 0.0, 260);     // an all-zero mask: loss 0, no gradient
}

template <typename T>
void check_next_patch_mse(int B, int n_t, int P, int L, uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "B=" << B << " n_t=" << n_t << " P=" << P << " L=" << L);
  const double tol = mode_tolerance<T>();
  const float dloss = 1.3f;
  const size_t n = size_t(B) * n_t * P * L;
  const auto pred = rounded_to<T>(random_floats(n, seed));
  const auto target = random_floats(n, seed + 1);
  const float loss = cpu::next_patch_mse_forward(pred.data(), target.data(), B, n_t, P, L);
  std::vector<float> gpred(n, 0.0f);
  cpu::next_patch_mse_backward(gpred.data(), pred.data(), target.data(), B, n_t, P, L, dloss);
  const Prefilled dpred = prefilled<T>(gpred, seed + 2);

  DeviceBuffer<T> d_pred(pred), d_dpred(dpred.before);
  DeviceBuffer<float> d_target(target), d_loss(1);
  gpu::next_patch_mse<T>(d_loss.ptr, d_dpred.ptr, d_pred.ptr, d_target.ptr, B, n_t, P, L, dloss, 0);
  sync_ok();
  const float got = d_loss.host()[0];
  if (n_t < 2) {
    EXPECT_EQ(got, 0.0f) << "one time patch: nothing to predict";
    EXPECT_EQ(d_dpred.host(), dpred.before);
  } else {
    EXPECT_LT(scalar_rel_error(got, loss), mode_tolerance<float>()) << "loss " << got << " vs " << loss;
    expect_matches(d_dpred.host(), dpred.want, tol, "dpred");
  }
}

TYPED_TEST(CudaOpsTest, NextPatchMseMatchesCpu) {
  SKIP_WITHOUT_GPU();
  check_next_patch_mse<TypeParam>(3, 5, 7, 6, 270);
  check_next_patch_mse<TypeParam>(4, 8, 64, 8, 280);
  check_next_patch_mse<TypeParam>(2, 1, 5, 4, 290);  // n_t = 1: loss 0
}

// ---- contrastive ----

template <typename T>
void check_contrastive(int B, int E, float logit_scale, bool zero_row, uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "B=" << B << " E=" << E << " logit_scale=" << logit_scale
                                  << " zero_row=" << zero_row);
  const double tol = mode_tolerance<T>();
  const float max_logit_scale = 4.6052f, dloss = 1.3f;
  auto brain_raw = random_floats(size_t(B) * E, seed);
  if (zero_row) std::fill(brain_raw.begin() + 2 * E, brain_raw.begin() + 3 * E, 0.0f);  // row 2: norm clamped
  const auto brain = rounded_to<T>(brain_raw);
  auto stim = random_floats(size_t(B) * E, seed + 1);
  for (size_t k = 0; k < stim.size(); ++k) stim[k] += 0.5f * brain_raw[k];  // matched pairs are closer
  stim = rounded_to<T>(stim);
  const float loss = cpu::contrastive_forward(brain.data(), stim.data(), logit_scale, max_logit_scale, B, E);
  std::vector<float> gbrain(brain.size(), 0.0f), gstim(stim.size(), 0.0f), gscale(1, 0.0f);
  cpu::contrastive_backward(gbrain.data(), gstim.data(), gscale.data(), brain.data(), stim.data(), logit_scale,
                            max_logit_scale, B, E, dloss);
  const Prefilled dbrain = prefilled<T>(gbrain, seed + 2), dstim = prefilled<T>(gstim, seed + 3);
  const std::vector<float> dscale_before{0.25f};

  DeviceBuffer<T> d_brain(brain), d_stim(stim), d_dbrain(dbrain.before), d_dstim(dstim.before);
  DeviceBuffer<float> d_scale(std::vector<float>{logit_scale}), d_dscale(dscale_before), d_loss(1), d_loss2(1);
  gpu::contrastive<T>(d_loss.ptr, d_dbrain.ptr, d_dstim.ptr, d_dscale.ptr, d_brain.ptr, d_stim.ptr, d_scale.ptr,
                      max_logit_scale, B, E, dloss, 0);
  gpu::contrastive<T>(d_loss2.ptr, nullptr, nullptr, nullptr, d_brain.ptr, d_stim.ptr, d_scale.ptr, max_logit_scale,
                      B, E, dloss, 0);  // the loss alone
  sync_ok();
  const float got = d_loss.host()[0];
  EXPECT_LT(scalar_rel_error(got, loss), mode_tolerance<float>()) << "loss " << got << " vs " << loss;
  EXPECT_EQ(d_loss2.host()[0], got) << "the loss does not depend on the gradients asked for";
  expect_matches(d_dbrain.host(), dbrain.want, tol, "dbrain");
  expect_matches(d_dstim.host(), dstim.want, tol, "dstim");
  const float got_dscale = d_dscale.host()[0];
  if (logit_scale > max_logit_scale) {
    EXPECT_EQ(gscale[0], 0.0f) << "the CPU clamps too";
    EXPECT_EQ(got_dscale, dscale_before[0]) << "a clamped scale gets no gradient";
  } else {
    EXPECT_LT(scalar_rel_error(got_dscale - dscale_before[0], gscale[0]), 10 * mode_tolerance<float>())
        << "dlogit_scale " << got_dscale - dscale_before[0] << " vs " << gscale[0];
  }
}

TYPED_TEST(CudaOpsTest, ContrastiveMatchesCpu) {
  SKIP_WITHOUT_GPU();
  check_contrastive<TypeParam>(37, 45, 2.659f, false, 300);
  check_contrastive<TypeParam>(257, 200, 3.0f, false, 310);  // several GEMM tiles, ragged at both ends
  check_contrastive<TypeParam>(19, 24, 5.0f, false, 320);    // scale clamped above the maximum
  check_contrastive<TypeParam>(11, 13, 1.0f, true, 330);     // a zero row: the norm floor, no NaN
}

// ---- AdamW ----

struct AdamWCase {
  float max_norm;     // 0: clipping off
  int nan_step;       // 0: none; else the step whose gradient holds a NaN (it must change nothing)
  float grad_range;
};

template <typename M>
void check_adamw(const AdamWCase& c, uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "max_norm=" << c.max_norm << " nan_step=" << c.nan_step
                                  << (std::is_same_v<M, float> ? " float mirror" : " bf16 mirror"));
  const int64_t n = 5003;
  const std::vector<bfm::runtime::ArenaSegment> segments{{0, 1200, true}, {1200, 7, false}, {1207, 3796, true}};
  std::vector<gpu::AdamWSegment> gpu_segments;
  int64_t max_segment = 0;
  for (const auto& s : segments) {
    gpu_segments.push_back({s.offset, s.size, s.weight_decay ? 1 : 0});
    max_segment = std::max(max_segment, s.size);
  }
  bfm::runtime::AdamWConfig config;
  config.lr = 3e-3;
  config.grad_clip = c.max_norm;
  bfm::runtime::AdamW cpu_adamw(n, segments, config);
  std::vector<float> params = random_floats(n, seed);

  DeviceBuffer<float> d_param(params), d_m(std::vector<float>(n, 0.0f)), d_v(std::vector<float>(n, 0.0f)), d_grad(n);
  DeviceBuffer<M> d_mirror(n);
  DeviceBuffer<float> d_norm(1), d_scale(1);
  DeviceArray<int> d_finite(std::vector<int>{-1});
  DeviceArray<gpu::AdamWSegment> d_segments(gpu_segments);
  gpu::copy_to_mirror<M>(d_mirror.ptr, d_param.ptr, n, 0);
  sync_ok();
  EXPECT_EQ(d_mirror.host(), rounded_to<M>(params)) << "copy_to_mirror";

  const int steps = 4;
  for (int step = 1; step <= steps; ++step) {
    SCOPED_TRACE(testing::Message() << "step " << step);
    std::vector<float> grad = random_floats(n, seed + 10 + step, -c.grad_range, c.grad_range);
    const double lr = config.lr * (1.0 - 0.1 * step);  // a schedule: lr changes between steps
    if (step == c.nan_step) grad[2500] = std::nanf("");
    d_grad.upload(grad);
    const auto param_before = d_param.host(), m_before = d_m.host(), v_before = d_v.host();
    const auto mirror_before = d_mirror.host();
    gpu::grad_norm(d_norm.ptr, d_scale.ptr, d_finite.ptr, d_grad.ptr, n, c.max_norm, 0);
    gpu::adamw_update<M>(d_param.ptr, d_mirror.ptr, d_m.ptr, d_v.ptr, d_grad.ptr, d_segments.ptr,
                         int(gpu_segments.size()), max_segment, float(lr), float(config.beta1), float(config.beta2),
                         float(config.eps), float(config.weight_decay), d_scale.ptr, d_finite.ptr, step, 0);
    sync_ok();
    int finite = -1;
    ASSERT_EQ(cudaMemcpy(&finite, d_finite.ptr, sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
    if (step == c.nan_step) {
      EXPECT_EQ(finite, 0);
      EXPECT_EQ(d_param.host(), param_before) << "a NaN gradient leaves the parameters as they were";
      EXPECT_EQ(d_m.host(), m_before);
      EXPECT_EQ(d_v.host(), v_before);
      EXPECT_EQ(d_mirror.host(), mirror_before);
      cpu_adamw.set_steps_taken(cpu_adamw.steps_taken() + 1);  // the caller's step count moves on
      continue;
    }
    EXPECT_EQ(finite, 1);
    const double cpu_norm = cpu_adamw.step(params.data(), grad.data(), lr);
    const float got_norm = d_norm.host()[0], got_scale = d_scale.host()[0];
    EXPECT_LT(scalar_rel_error(got_norm, cpu_norm), 1e-6) << "norm " << got_norm << " vs " << cpu_norm;
    const double want_scale = (c.max_norm > 0 && cpu_norm > c.max_norm) ? c.max_norm / cpu_norm : 1.0;
    EXPECT_LT(scalar_rel_error(got_scale, want_scale), 1e-6) << "scale " << got_scale << " vs " << want_scale;
    if (c.max_norm > 0 && c.grad_range > 1.0f) {
      EXPECT_LT(got_scale, 0.5f) << "this case must clip";
    }
    const auto got_param = d_param.host();
    expect_matches(got_param, params, mode_tolerance<float>(), "param");
    expect_matches(d_m.host(), cpu_adamw.first_moment(), mode_tolerance<float>(), "m");
    expect_matches(d_v.host(), cpu_adamw.second_moment(), mode_tolerance<float>(), "v");
    EXPECT_EQ(d_mirror.host(), rounded_to<M>(got_param)) << "the mirror holds the updated parameters";
  }
}

TEST(CudaOpsAdamWTest, StepsMatchCpuAdamW) {
  SKIP_WITHOUT_GPU();
  check_adamw<float>({0.0f, 0, 1.0f}, 400);     // clipping off
  check_adamw<bf16>({1e4f, 0, 1.0f}, 410);      // clipping on, not reached
  check_adamw<bf16>({0.5f, 0, 2.0f}, 420);      // clipping on and reached
  check_adamw<float>({1.0f, 3, 1.0f}, 430);     // a NaN gradient at step 3: that step is skipped
}

TEST(CudaOpsAdamWTest, GradNormRepeatsAndHandlesEmpty) {
  SKIP_WITHOUT_GPU();
  const int64_t n = 1 << 20;
  const auto g = random_floats(n, 440);
  double want = 0.0;
  for (float x : g) want += double(x) * x;
  want = std::sqrt(want);
  DeviceBuffer<float> d_g(g), d_norm(1), d_scale(1), d_norm2(1), d_scale2(1);
  DeviceArray<int> d_finite(std::vector<int>{-1});
  gpu::grad_norm(d_norm.ptr, d_scale.ptr, d_finite.ptr, d_g.ptr, n, 1.0f, 0);
  gpu::grad_norm(d_norm2.ptr, d_scale2.ptr, d_finite.ptr, d_g.ptr, n, 1.0f, 0);
  sync_ok();
  EXPECT_LT(scalar_rel_error(d_norm.host()[0], want), 1e-6);
  EXPECT_EQ(d_norm.host(), d_norm2.host()) << "the norm repeats bit for bit";
  EXPECT_LT(scalar_rel_error(d_scale.host()[0], 1.0 / want), 1e-6) << "max_norm / norm";
  // An empty arena: norm 0, no clipping, finite.
  gpu::grad_norm(d_norm.ptr, d_scale.ptr, d_finite.ptr, d_g.ptr, 0, 1.0f, 0);
  sync_ok();
  EXPECT_EQ(d_norm.host()[0], 0.0f);
  EXPECT_EQ(d_scale.host()[0], 1.0f);
  int finite = -1;
  ASSERT_EQ(cudaMemcpy(&finite, d_finite.ptr, sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(finite, 1);
}

}  // namespace
