// The MAE decoder's input (MODEL_SPEC "Objectives", mae): a full sequence of N tokens in index order holding the
// embedded visible tokens z at their positions and mask_token everywhere else, plus parcel_embed[p] + time_embed[j]
// at position i = j * P + p.
//
// Backward: dz is a gather of dout at the visible positions (no two visible tokens share a position, so it runs
// in parallel). dmask_token, dparcel_embed and dtime_embed sum dout over many positions; they are parallelised over
// blocks of D columns, each block walking (sample, position) in order into float64 accumulators, so the result
// does not depend on the thread count.
#include "kernels/mask_fill.h"

#include <algorithm>
#include <vector>

#include "base/error.h"

namespace bfm::kernels::cpu {
namespace {

constexpr int kColumnBlock = 64;

// visible [B, N]: 1 where position i of sample b holds an encoder token. Checks that visible_index names distinct
// positions inside [0, N).
std::vector<uint8_t> visible_positions(const char* op, const int32_t* visible_index, int B, int N, int n_vis, int P,
                                       int D) {
  require(B >= 0 && N >= 0 && n_vis >= 0 && n_vis <= N && P > 0 && D > 0, op, ": bad sizes B=", B, " N=", N,
          " n_vis=", n_vis, " P=", P, " D=", D);
  require(N % P == 0, op, ": N=", N, " is not a multiple of the parcel count P=", P);
  std::vector<uint8_t> visible(static_cast<size_t>(B) * N, 0);
  for (int b = 0; b < B; ++b) {
    for (int k = 0; k < n_vis; ++k) {
      const int32_t i = visible_index[static_cast<int64_t>(b) * n_vis + k];
      require(i >= 0 && i < N, op, ": visible_index[", b, ", ", k, "]=", i, " is outside [0, ", N, ")");
      uint8_t& seen = visible[static_cast<size_t>(b) * N + i];
      require(seen == 0, op, ": visible_index of sample ", b, " names position ", i, " twice");
      seen = 1;
    }
  }
  return visible;
}

}  // namespace

void mask_fill_forward(float* out, const float* z, const float* mask_token, const float* parcel_embed,
                       const float* time_embed, const int32_t* visible_index, int B, int N, int n_vis, int P, int D) {
  const std::vector<uint8_t> visible = visible_positions("mask_fill_forward", visible_index, B, N, n_vis, P, D);
  // Every position first gets mask_token + its embeddings; then the visible ones are overwritten.
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < static_cast<int64_t>(B) * N; ++row) {
    const int i = static_cast<int>(row % N);
    const float* pe = parcel_embed + static_cast<int64_t>(i % P) * D;
    const float* te = time_embed + static_cast<int64_t>(i / P) * D;
    float* o = out + row * D;
    if (visible[row] == 0)
      for (int d = 0; d < D; ++d) o[d] = mask_token[d] + pe[d] + te[d];
  }
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < static_cast<int64_t>(B) * n_vis; ++row) {
    const int64_t b = row / n_vis;
    const int i = visible_index[row];
    const float* pe = parcel_embed + static_cast<int64_t>(i % P) * D;
    const float* te = time_embed + static_cast<int64_t>(i / P) * D;
    const float* zr = z + row * D;
    float* o = out + (b * N + i) * D;
    for (int d = 0; d < D; ++d) o[d] = zr[d] + pe[d] + te[d];
  }
}

void mask_fill_backward(float* dz, float* dmask_token, float* dparcel_embed, float* dtime_embed, const float* dout,
                        const int32_t* visible_index, int B, int N, int n_vis, int P, int D) {
  const std::vector<uint8_t> visible = visible_positions("mask_fill_backward", visible_index, B, N, n_vis, P, D);
  if (dz != nullptr) {
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < static_cast<int64_t>(B) * n_vis; ++row) {
      const int64_t b = row / n_vis;
      const float* g = dout + (b * N + visible_index[row]) * D;
      float* dzr = dz + row * D;
      for (int d = 0; d < D; ++d) dzr[d] += g[d];
    }
  }
  if (dmask_token == nullptr && dparcel_embed == nullptr && dtime_embed == nullptr) return;
  const int n_t = N / P;
  const int n_blocks = (D + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static)
  for (int blk = 0; blk < n_blocks; ++blk) {
    const int d0 = blk * kColumnBlock;
    const int nd = std::min(kColumnBlock, D - d0);
    double acc_mask[kColumnBlock] = {};
    std::vector<double> acc_parcel(static_cast<size_t>(P) * nd, 0.0);  // [P, nd]
    std::vector<double> acc_time(static_cast<size_t>(n_t) * nd, 0.0);  // [n_t, nd]
    for (int64_t row = 0; row < static_cast<int64_t>(B) * N; ++row) {
      const int i = static_cast<int>(row % N);
      const float* g = dout + row * D + d0;
      double* ap = acc_parcel.data() + static_cast<int64_t>(i % P) * nd;
      double* at = acc_time.data() + static_cast<int64_t>(i / P) * nd;
      for (int d = 0; d < nd; ++d) {
        ap[d] += g[d];
        at[d] += g[d];
      }
      if (visible[row] == 0)
        for (int d = 0; d < nd; ++d) acc_mask[d] += g[d];
    }
    if (dmask_token != nullptr)
      for (int d = 0; d < nd; ++d) dmask_token[d0 + d] += static_cast<float>(acc_mask[d]);
    if (dparcel_embed != nullptr)
      for (int p = 0; p < P; ++p)
        for (int d = 0; d < nd; ++d)
          dparcel_embed[static_cast<int64_t>(p) * D + d0 + d] += static_cast<float>(acc_parcel[p * nd + d]);
    if (dtime_embed != nullptr)
      for (int j = 0; j < n_t; ++j)
        for (int d = 0; d < nd; ++d)
          dtime_embed[static_cast<int64_t>(j) * D + d0 + d] += static_cast<float>(acc_time[j * nd + d]);
  }
}

}  // namespace bfm::kernels::cpu
