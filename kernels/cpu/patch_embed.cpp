// Tokens of a window and their embedding (MODEL_SPEC "Input and tokens"):
//   token i = j * P + p holds x[j*L + l, p], l = 0..L-1;  e_i = W x_patch_i + b + parcel_embed[p] + time_embed[j].
// The patch projection is the linear kernel (sgemm) over the selected tokens' patches, gathered into one contiguous
// [B * n_tok, L] block when a token_index picks a subset (the MAE encoder's visible tokens).
//
// dparcel_embed and dtime_embed sum dout over every token of a parcel / time patch. They are parallelised over
// blocks of D columns, each block walking the tokens in order into float64 accumulators, so the result does not
// depend on the thread count.
#include "kernels/patch_embed.h"

#include <algorithm>
#include <vector>

#include "kernels/linear.h"
#include "base/error.h"

namespace bfm::kernels::cpu {
namespace {

constexpr int kColumnBlock = 64;

void check_sizes(const char* op, int B, int N, int n_tok, int P, int L, int D) {
  require(B >= 0 && N >= 0 && n_tok >= 0 && P > 0 && L > 0 && D > 0, op, ": bad sizes B=", B, " N=", N,
          " n_tok=", n_tok, " P=", P, " L=", L, " D=", D);
  require(N % P == 0, op, ": N=", N, " is not a multiple of the parcel count P=", P);
}

// The token id (i = j * P + p) of output row t of sample b.
int token_at(const int32_t* token_index, int b, int t, int n_tok) {
  return token_index != nullptr ? token_index[static_cast<int64_t>(b) * n_tok + t] : t;
}

void check_token_index(const char* op, const int32_t* token_index, int B, int N, int n_tok) {
  if (token_index == nullptr) {
    require(n_tok == N, op, ": without a token_index n_tok=", n_tok, " must equal N=", N);
    return;
  }
  for (int64_t k = 0; k < static_cast<int64_t>(B) * n_tok; ++k)
    require(token_index[k] >= 0 && token_index[k] < N, op, ": token_index[", k, "]=", token_index[k],
            " is outside [0, ", N, ")");
}

// The patches of the selected tokens as one [B * n_tok, L] block: the input itself when every token is taken.
const float* gather_patches(std::vector<float>& buffer, const float* patches, const int32_t* token_index, int B,
                            int N, int n_tok, int L) {
  if (token_index == nullptr) return patches;
  buffer.resize(static_cast<size_t>(B) * n_tok * L);
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < static_cast<int64_t>(B) * n_tok; ++row) {
    const int64_t b = row / n_tok;
    const float* src = patches + (b * N + token_index[row]) * L;
    std::copy(src, src + L, buffer.data() + row * L);
  }
  return buffer.data();
}

}  // namespace

void patchify(float* patches, const float* x, int B, int T, int P, int L) {
  require(B >= 0 && T >= 0 && P > 0 && L > 0, "patchify: bad sizes B=", B, " T=", T, " P=", P, " L=", L);
  require(T % L == 0, "patchify: window T=", T, " is not a multiple of patch_len L=", L);
  const int n_t = T / L;
  // x [B, T, P] -> patches [B, n_t * P, L]: one (sample, time patch) per iteration.
#pragma omp parallel for schedule(static)
  for (int64_t bj = 0; bj < static_cast<int64_t>(B) * n_t; ++bj) {
    const int64_t b = bj / n_t;
    const int64_t j = bj % n_t;
    const float* xs = x + (b * T + j * L) * P;  // x[b, j*L + l, p] = xs[l * P + p]
    float* out = patches + (b * n_t * P + j * P) * L;
    for (int p = 0; p < P; ++p)
      for (int l = 0; l < L; ++l) out[p * L + l] = xs[l * P + p];
  }
}

void patch_embed_forward(float* out, const float* patches, const float* w, const float* b, const float* parcel_embed,
                         const float* time_embed, const int32_t* token_index, int B, int N, int n_tok, int P, int L,
                         int D) {
  check_sizes("patch_embed_forward", B, N, n_tok, P, L, D);
  check_token_index("patch_embed_forward", token_index, B, N, n_tok);
  const int64_t rows = static_cast<int64_t>(B) * n_tok;
  if (rows == 0) return;
  std::vector<float> gathered;
  linear_forward(out, gather_patches(gathered, patches, token_index, B, N, n_tok, L), w, b, rows, L, D);
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    const int i = token_at(token_index, static_cast<int>(row / n_tok), static_cast<int>(row % n_tok), n_tok);
    const float* pe = parcel_embed + static_cast<int64_t>(i % P) * D;
    const float* te = time_embed + static_cast<int64_t>(i / P) * D;
    float* o = out + row * D;
    for (int d = 0; d < D; ++d) o[d] += pe[d] + te[d];
  }
}

void patch_embed_backward(float* dw, float* db, float* dparcel_embed, float* dtime_embed, const float* dout,
                          const float* patches, const int32_t* token_index, int B, int N, int n_tok, int P, int L,
                          int D) {
  check_sizes("patch_embed_backward", B, N, n_tok, P, L, D);
  check_token_index("patch_embed_backward", token_index, B, N, n_tok);
  const int64_t rows = static_cast<int64_t>(B) * n_tok;
  if (rows == 0) return;
  std::vector<float> gathered;
  // dw [D, L] += dout^T patches, db [D] += column sums of dout (no dx: the patches are data).
  linear_backward(nullptr, dw, db, dout, gather_patches(gathered, patches, token_index, B, N, n_tok, L), nullptr,
                  rows, L, D);
  if (dparcel_embed == nullptr && dtime_embed == nullptr) return;
  const int n_t = N / P;
  const int n_blocks = (D + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static)
  for (int blk = 0; blk < n_blocks; ++blk) {
    const int d0 = blk * kColumnBlock;
    const int nd = std::min(kColumnBlock, D - d0);
    std::vector<double> acc_parcel(static_cast<size_t>(P) * nd, 0.0);  // [P, nd]
    std::vector<double> acc_time(static_cast<size_t>(n_t) * nd, 0.0);  // [n_t, nd]
    for (int64_t row = 0; row < rows; ++row) {
      const int i = token_at(token_index, static_cast<int>(row / n_tok), static_cast<int>(row % n_tok), n_tok);
      const float* g = dout + row * D + d0;
      double* ap = acc_parcel.data() + static_cast<int64_t>(i % P) * nd;
      double* at = acc_time.data() + static_cast<int64_t>(i / P) * nd;
      for (int d = 0; d < nd; ++d) {
        ap[d] += g[d];
        at[d] += g[d];
      }
    }
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
