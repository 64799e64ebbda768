// Symmetric contrastive (CLIP) loss with a learnable temperature, the L2 normalisation fused in:
//   zb = brain / |brain|, zs = stim / |stim|, logits = exp(min(s, s_max)) zb zs^T  [B, B],
//   loss = (1/2B) sum_i [(lse_j logits[i, j] - logits[i, i]) + (lse_j logits[j, i] - logits[i, i])].
// The B x B matrix is small (B is a batch), so it is kept whole; the products with E go to sgemm, everything on the
// B x B logits runs in float64.
//
// Backward: d loss / d logits[i, j] = (softmax_row_i[j] + softmax_col_j[i] - 2 delta_ij) / 2B;
// d logits / d s = logits (while s <= s_max, as torch.clamp); d(zb zs^T) gives dzb = dG zs, dzs = dG^T zb; and
// through z = u / |u|: du = (dz - z (z . dz)) / |u|.
// Like torch.nn.functional.normalize, the norm is clamped to at least 1e-12 (a zero row gives zero, not NaN).
#include "kernels/contrastive.h"

#include "kernels/cpu/sgemm.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "base/error.h"

namespace bfm::kernels::cpu {
namespace {

constexpr double kNormEps = 1e-12;

// Row-normalised copy z [B, E] of u, and the (clamped) norms [B].
void normalize_rows(std::vector<float>& z, std::vector<double>& norm, const float* u, int B, int E) {
  z.resize(static_cast<size_t>(B) * E);
  norm.resize(B);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < B; ++i) {
    const float* ui = u + static_cast<int64_t>(i) * E;
    double sq = 0.0;
    for (int e = 0; e < E; ++e) sq += static_cast<double>(ui[e]) * ui[e];
    norm[i] = std::max(std::sqrt(sq), kNormEps);
    const float inv = static_cast<float>(1.0 / norm[i]);
    for (int e = 0; e < E; ++e) z[static_cast<size_t>(i) * E + e] = ui[e] * inv;
  }
}

// The forward quantities both passes need.
struct ContrastiveLogits {
  std::vector<float> zb, zs;          // [B, E]
  std::vector<double> nb, ns;         // [B] norms of brain / stim
  std::vector<double> logits;         // [B, B]
  std::vector<double> lse_row, lse_col;  // [B]
  double loss = 0.0;
};

ContrastiveLogits compute_logits(const float* brain, const float* stim, float logit_scale, float max_logit_scale,
                                 int B, int E) {
  ContrastiveLogits c;
  normalize_rows(c.zb, c.nb, brain, B, E);
  normalize_rows(c.zs, c.ns, stim, B, E);
  std::vector<float> gram(static_cast<size_t>(B) * B);  // zb zs^T
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, B, E, 1.0f, c.zb.data(), E, c.zs.data(), E, 0.0f,
              gram.data(), B);
  const double scale = std::exp(static_cast<double>(std::min(logit_scale, max_logit_scale)));
  c.logits.resize(gram.size());
  for (size_t k = 0; k < gram.size(); ++k) c.logits[k] = scale * gram[k];
  c.lse_row.resize(B);
  c.lse_col.resize(B);
  const auto at = [&](int i, int j) { return c.logits[static_cast<size_t>(i) * B + j]; };
#pragma omp parallel for schedule(static)
  for (int i = 0; i < B; ++i) {
    double mr = -std::numeric_limits<double>::infinity();
    double mc = mr;
    for (int j = 0; j < B; ++j) {
      mr = std::max(mr, at(i, j));
      mc = std::max(mc, at(j, i));
    }
    double sr = 0.0, sc = 0.0;
    for (int j = 0; j < B; ++j) {
      sr += std::exp(at(i, j) - mr);
      sc += std::exp(at(j, i) - mc);
    }
    c.lse_row[i] = mr + std::log(sr);
    c.lse_col[i] = mc + std::log(sc);
  }
  double sum = 0.0;
  for (int i = 0; i < B; ++i) sum += (c.lse_row[i] - at(i, i)) + (c.lse_col[i] - at(i, i));
  c.loss = sum / (2.0 * B);
  return c;
}

// du [B, E] += dloss-scaled gradient through z = u / max(|u|, eps), given dz.
void normalize_backward(float* du, const float* dz, const std::vector<float>& z, const std::vector<double>& norm,
                        int B, int E) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < B; ++i) {
    const float* zi = z.data() + static_cast<size_t>(i) * E;
    const float* dzi = dz + static_cast<int64_t>(i) * E;
    // Where the norm was clamped, |u| is a constant and only dz / eps remains.
    const bool clamped = norm[i] <= kNormEps;
    double dot = 0.0;
    if (!clamped)
      for (int e = 0; e < E; ++e) dot += static_cast<double>(zi[e]) * dzi[e];
    const float inv = static_cast<float>(1.0 / norm[i]);
    const float zdot = static_cast<float>(dot);
    float* dui = du + static_cast<int64_t>(i) * E;
    for (int e = 0; e < E; ++e) dui[e] += (dzi[e] - zi[e] * zdot) * inv;
  }
}

void check_sizes(const char* op, int B, int E) {
  require(B > 0 && E > 0, op, ": bad sizes B=", B, " E=", E);
}

}  // namespace

float contrastive_forward(const float* brain, const float* stim, float logit_scale, float max_logit_scale, int B,
                          int E) {
  check_sizes("contrastive_forward", B, E);
  return static_cast<float>(compute_logits(brain, stim, logit_scale, max_logit_scale, B, E).loss);
}

void contrastive_backward(float* dbrain, float* dstim, float* dlogit_scale, const float* brain, const float* stim,
                          float logit_scale, float max_logit_scale, int B, int E, float dloss) {
  check_sizes("contrastive_backward", B, E);
  const ContrastiveLogits c = compute_logits(brain, stim, logit_scale, max_logit_scale, B, E);
  const double scale = std::exp(static_cast<double>(std::min(logit_scale, max_logit_scale)));
  const double g = static_cast<double>(dloss) / (2.0 * B);
  // dgram [B, B] = scale * dlogits; per-row partials of sum(dlogits * logits) for d/ds, added in row order.
  std::vector<float> dgram(static_cast<size_t>(B) * B);
  std::vector<double> ds_row(B, 0.0);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < B; ++i) {
    double acc = 0.0;
    for (int j = 0; j < B; ++j) {
      const double l = c.logits[static_cast<size_t>(i) * B + j];
      double dl = std::exp(l - c.lse_row[i]) + std::exp(l - c.lse_col[j]);
      if (i == j) dl -= 2.0;
      dl *= g;
      acc += dl * l;
      dgram[static_cast<size_t>(i) * B + j] = static_cast<float>(dl * scale);
    }
    ds_row[i] = acc;
  }
  if (dlogit_scale != nullptr && logit_scale <= max_logit_scale) {
    double ds = 0.0;
    for (double d : ds_row) ds += d;
    *dlogit_scale += static_cast<float>(ds);
  }
  std::vector<float> dz(static_cast<size_t>(B) * E);
  if (dbrain != nullptr) {
    // dzb [B, E] = dgram [B, B] zs [B, E]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, E, B, 1.0f, dgram.data(), B, c.zs.data(), E, 0.0f,
                dz.data(), E);
    normalize_backward(dbrain, dz.data(), c.zb, c.nb, B, E);
  }
  if (dstim != nullptr) {
    // dzs [B, E] = dgram^T zb
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, B, E, B, 1.0f, dgram.data(), B, c.zb.data(), E, 0.0f,
                dz.data(), E);
    normalize_backward(dstim, dz.data(), c.zs, c.ns, B, E);
  }
}

}  // namespace bfm::kernels::cpu
