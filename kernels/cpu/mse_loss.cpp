// Reconstruction losses (MODEL_SPEC "Objectives"): mean squared error over the masked tokens (mae) or over the
// next-patch pairs (causal).
//
// The sums run over fixed chunks of token rows, each chunk into its own float64 partial, and the partials are added
// in chunk order: the loss is the same bit for bit whatever the thread count.
#include "kernels/mse_loss.h"

#include <algorithm>
#include <vector>

#include "base/error.h"

namespace bfm::kernels::cpu {
namespace {

constexpr int64_t kRowChunk = 256;

// sum over rows r in [0, rows) with take(r) of sum_l (pred[r, l] - target[shift(r), l])^2, in float64.
template <class Take, class TargetRow>
double sum_squared_error(const float* pred, const float* target, int64_t rows, int L, Take take, TargetRow target_row) {
  const int64_t n_chunks = (rows + kRowChunk - 1) / kRowChunk;
  std::vector<double> partial(static_cast<size_t>(n_chunks), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
    double acc = 0.0;
    for (int64_t r = chunk * kRowChunk; r < std::min(rows, (chunk + 1) * kRowChunk); ++r) {
      if (!take(r)) continue;
      const float* p = pred + r * L;
      const float* t = target + target_row(r) * L;
      for (int l = 0; l < L; ++l) {
        const double e = static_cast<double>(p[l]) - t[l];
        acc += e * e;
      }
    }
    partial[chunk] = acc;
  }
  double sum = 0.0;
  for (double s : partial) sum += s;
  return sum;
}

}  // namespace

float masked_mse_forward(const float* pred, const float* target, const uint8_t* mask, int B, int N, int L) {
  require(B >= 0 && N >= 0 && L > 0, "masked_mse_forward: bad sizes B=", B, " N=", N, " L=", L);
  const int64_t rows = static_cast<int64_t>(B) * N;
  const int64_t n_masked = std::count_if(mask, mask + rows, [](uint8_t m) { return m != 0; });
  if (n_masked == 0) return 0.0f;
  const double sum = sum_squared_error(
      pred, target, rows, L, [mask](int64_t r) { return mask[r] != 0; }, [](int64_t r) { return r; });
  return static_cast<float>(sum / (static_cast<double>(n_masked) * L));
}

void masked_mse_backward(float* dpred, const float* pred, const float* target, const uint8_t* mask, int B, int N,
                         int L, float dloss) {
  require(B >= 0 && N >= 0 && L > 0, "masked_mse_backward: bad sizes B=", B, " N=", N, " L=", L);
  const int64_t rows = static_cast<int64_t>(B) * N;
  const int64_t n_masked = std::count_if(mask, mask + rows, [](uint8_t m) { return m != 0; });
  if (n_masked == 0) return;
  // d/dpred of sum (pred - target)^2 / (n_masked L)
  const float scale = static_cast<float>(2.0 * dloss / (static_cast<double>(n_masked) * L));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    if (mask[r] == 0) continue;
    for (int l = 0; l < L; ++l) dpred[r * L + l] += scale * (pred[r * L + l] - target[r * L + l]);
  }
}

// Rows of sample b: token (j, p) at row (b * n_t + j) * P + p; its target is the row P further on, and the last time
// patch of each sample predicts nothing.
float next_patch_mse_forward(const float* pred, const float* target, int B, int n_t, int P, int L) {
  require(B >= 0 && n_t >= 0 && P > 0 && L > 0, "next_patch_mse_forward: bad sizes B=", B, " n_t=", n_t, " P=", P,
          " L=", L);
  if (n_t < 2 || B == 0) return 0.0f;
  const int64_t per_sample = static_cast<int64_t>(n_t) * P;
  const int64_t rows = B * per_sample;
  const double sum = sum_squared_error(
      pred, target, rows, L, [per_sample, P](int64_t r) { return r % per_sample < per_sample - P; },
      [P](int64_t r) { return r + P; });
  return static_cast<float>(sum / (static_cast<double>(B) * (n_t - 1) * P * L));
}

void next_patch_mse_backward(float* dpred, const float* pred, const float* target, int B, int n_t, int P, int L,
                             float dloss) {
  require(B >= 0 && n_t >= 0 && P > 0 && L > 0, "next_patch_mse_backward: bad sizes B=", B, " n_t=", n_t, " P=", P,
          " L=", L);
  if (n_t < 2 || B == 0) return;
  const int64_t per_sample = static_cast<int64_t>(n_t) * P;
  const int64_t rows = B * per_sample;
  const float scale = static_cast<float>(2.0 * dloss / (static_cast<double>(B) * (n_t - 1) * P * L));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    if (r % per_sample >= per_sample - P) continue;
    const float* t = target + (r + P) * L;
    for (int l = 0; l < L; ++l) dpred[r * L + l] += scale * (pred[r * L + l] - t[l]);
  }
}

}  // namespace bfm::kernels::cpu
