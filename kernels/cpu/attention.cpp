// Multi-head scaled dot-product attention on the CPU, FlashAttention-2 style: tile by tile with an online softmax,
// so no N x N score matrix is ever stored. A (kTileQ x kTileK) block of scores lives in a local buffer; forward keeps
// only the per-row log-sum-exp (lse) for backward, which recomputes the probabilities from q, k and lse.
//
// qkv [B, N, 3D] = [q | k | v], head h in columns h*dh .. (h+1)*dh - 1 of each; out [B, N, D]; lse [B, H, N].
// Time-causal mode (causal_block = P > 0): query i sees keys k < (i / P + 1) * P (its own and earlier time patches).
//
// Work is split over (sample, head) pairs: one thread owns a head from start to end, so its dq, dk and dv have a
// single writer and a fixed summation order (deterministic whatever the thread count, no atomics). Per head, q
// (pre-scaled by 1/sqrt(dh)), k and v are first copied into contiguous buffers, so that every block product is a
// small row-major GEMM (block_gemm) over contiguous floats:
//   qs [N, dh]                    q / sqrt(dh), rows
//   kt [n_key_tiles][dh][kTileK]  k transposed tile by tile, zero-padded: scores = qs_tile kt_tile
//   v  [N_pad, dh]                v rows: acc += P v_tile
// Backward also keeps k rows (dq += dS k_tile), v^T tiles (dP = dO vt_tile), dO rows and dq, dk, dv [N_pad, dh].
// Time-causal key tiles wholly in the future of a query tile are skipped; the tiles that straddle a patch boundary
// are masked row by row (probability 0 beyond key_end).
#include "kernels/attention.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/vec_math.h"
#include "runtime/error.h"

namespace bfm::kernels::cpu {
namespace {

constexpr int kTileQ = 64;
constexpr int kTileK = 64;
static_assert(kTileK % 4 == 0, "exp_row works on whole Float4 lanes");
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Where head h of sample b sits in qkv / out / lse, and which keys each query may see.
struct HeadLayout {
  int N, H, dh, D, causal_block;

  int64_t qkv_row(int b, int i) const { return (static_cast<int64_t>(b) * N + i) * 3 * D; }
  int64_t out_row(int b, int i) const { return (static_cast<int64_t>(b) * N + i) * D; }
  int n_key_tiles() const { return (N + kTileK - 1) / kTileK; }
  // Query i sees keys [0, key_end(i)); non-decreasing in i.
  int key_end(int i) const { return causal_block > 0 ? std::min(N, (i / causal_block + 1) * causal_block) : N; }
};

void check_sizes(const char* op, int B, int N, int H, int dh, int causal_block) {
  require(B >= 0 && N >= 0 && H > 0 && dh > 0 && causal_block >= 0, op, ": bad sizes B=", B, " N=", N, " H=", H,
          " dh=", dh, " causal_block=", causal_block);
}

// Copies column block `col` (0 = q, 1 = k, 2 = v) of head h of sample b out of qkv:
// rows [N, dh] scaled by `scale` (rows may be null), and/or transposed key tiles [n_key_tiles][dh][kTileK]
// (tiles may be null), zero beyond N.
void load_head(float* rows, float* tiles, const float* qkv, const HeadLayout& hl, int b, int h, int col, float scale) {
  const int dh = hl.dh;
  if (tiles != nullptr) std::fill_n(tiles, static_cast<size_t>(hl.n_key_tiles()) * dh * kTileK, 0.0f);
  for (int i = 0; i < hl.N; ++i) {
    const float* src = qkv + hl.qkv_row(b, i) + static_cast<int64_t>(col) * hl.D + static_cast<int64_t>(h) * dh;
    if (rows != nullptr)
      for (int d = 0; d < dh; ++d) rows[static_cast<int64_t>(i) * dh + d] = src[d] * scale;
    if (tiles != nullptr) {
      float* tile = tiles + static_cast<int64_t>(i / kTileK) * dh * kTileK + i % kTileK;
      for (int d = 0; d < dh; ++d) tile[d * kTileK] = src[d];
    }
  }
}

// row[c] = exp(row[c] - shift) for c < n, 0 for n <= c < kTileK. The whole kTileK-wide row goes through exp4
// (finite inputs give finite outputs), then the excluded columns are zeroed.
void exp_row(float* row, float shift, int n) {
  for (int c = 0; c < kTileK; c += 4) {
    const Float4 e = exp4(load4(row + c) - shift);
    std::memcpy(row + c, &e, sizeof e);
  }
  std::fill(row + n, row + kTileK, 0.0f);
}

// The one matrix product of this file, on blocks that fit in L1: C [m, n] += A [m, k] B [k, n], with
// A(i, kk) = a[i * a_rs + kk * a_cs] (so A may be a transposed view: P^T, dS^T), B and C row-major with leading
// dimensions ldb and ldc. A 4 x 8 block of C stays in 8 registers across the whole k loop, each step broadcasting
// 4 entries of A against one 8-wide row of B; ragged edges fall back to plain loops that the compiler vectorises.
void block_gemm(float* c, int ldc, const float* a, int a_rs, int a_cs, const float* b, int ldb, int m, int n, int k) {
  constexpr int kRows = 4;
  constexpr int kCols = 8;
  int i = 0;
  for (; i + kRows <= m; i += kRows) {
    const float* a0 = a + static_cast<int64_t>(i) * a_rs;
    int j = 0;
    for (; j + kCols <= n; j += kCols) {
      Float4 c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {}, c30 = {}, c31 = {};
      for (int kk = 0; kk < k; ++kk) {
        const float* bk = b + static_cast<int64_t>(kk) * ldb + j;
        const Float4 b0 = load4(bk), b1 = load4(bk + 4);
        const float* ak = a0 + static_cast<int64_t>(kk) * a_cs;
        const float x0 = ak[0], x1 = ak[a_rs], x2 = ak[2 * a_rs], x3 = ak[3 * a_rs];
        c00 += x0 * b0;
        c01 += x0 * b1;
        c10 += x1 * b0;
        c11 += x1 * b1;
        c20 += x2 * b0;
        c21 += x2 * b1;
        c30 += x3 * b0;
        c31 += x3 * b1;
      }
      float* ci = c + static_cast<int64_t>(i) * ldc + j;
      add4(ci, c00);
      add4(ci + 4, c01);
      add4(ci + ldc, c10);
      add4(ci + ldc + 4, c11);
      add4(ci + 2 * ldc, c20);
      add4(ci + 2 * ldc + 4, c21);
      add4(ci + 3 * ldc, c30);
      add4(ci + 3 * ldc + 4, c31);
    }
    if (j < n) {
      for (int ii = 0; ii < kRows; ++ii) {
        float* ci = c + static_cast<int64_t>(i + ii) * ldc;
        for (int kk = 0; kk < k; ++kk) {
          const float x = a[static_cast<int64_t>(i + ii) * a_rs + static_cast<int64_t>(kk) * a_cs];
          const float* bk = b + static_cast<int64_t>(kk) * ldb;
          for (int jj = j; jj < n; ++jj) ci[jj] += x * bk[jj];
        }
      }
    }
  }
  for (; i < m; ++i) {
    float* ci = c + static_cast<int64_t>(i) * ldc;
    for (int kk = 0; kk < k; ++kk) {
      const float x = a[static_cast<int64_t>(i) * a_rs + static_cast<int64_t>(kk) * a_cs];
      const float* bk = b + static_cast<int64_t>(kk) * ldb;
      for (int jj = 0; jj < n; ++jj) ci[jj] += x * bk[jj];
    }
  }
}

// s [nr][kTileK] = a [nr, dh] (rows) * bt [dh][kTileK]: the scores q k^T of a block, and dO v^T.
void tile_product(float* s, const float* a, const float* bt, int nr, int dh) {
  std::fill_n(s, nr * kTileK, 0.0f);
  block_gemm(s, kTileK, a, dh, 1, bt, kTileK, nr, kTileK, dh);
}

// Per-thread scratch, sized once per call and reused for every head the thread owns.
struct HeadBuffers {
  std::vector<float> qs, kt, v, k, vt, dout, dq, dk, dv;
  std::vector<float> lse, dsum;  // [N]
  std::vector<float> s, p;       // [kTileQ][kTileK]
  std::vector<float> m, l, acc;  // forward running max / sum [kTileQ], output accumulator [kTileQ, dh]
};

// ---------------------------------------------------------------------------------------------------------------
// Forward of one head.
void head_forward(float* out, float* lse, const float* qkv, const HeadLayout& hl, int b, int h, HeadBuffers& buf) {
  const int N = hl.N, dh = hl.dh;
  const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
  load_head(buf.qs.data(), nullptr, qkv, hl, b, h, 0, scale);
  load_head(nullptr, buf.kt.data(), qkv, hl, b, h, 1, 1.0f);
  load_head(buf.v.data(), nullptr, qkv, hl, b, h, 2, 1.0f);
  float* s = buf.s.data();
  float* m = buf.m.data();
  float* l = buf.l.data();
  float* acc = buf.acc.data();

  for (int r0 = 0; r0 < N; r0 += kTileQ) {
    const int nr = std::min(kTileQ, N - r0);
    // Keys this query tile can see at all, and those every row of it sees (no masking needed below that).
    const int tile_key_end = hl.key_end(r0 + nr - 1);
    const int shared_key_end = hl.key_end(r0);
    std::fill_n(m, nr, kNegInf);
    std::fill_n(l, nr, 0.0f);
    std::fill_n(acc, static_cast<size_t>(nr) * dh, 0.0f);

    // Key tiles wholly in the future of every row of this query tile are skipped.
    for (int c0 = 0; c0 < tile_key_end; c0 += kTileK) {
      tile_product(s, buf.qs.data() + static_cast<int64_t>(r0) * dh, buf.kt.data() + static_cast<int64_t>(c0) * dh,
                   nr, dh);
      const float* vtile = buf.v.data() + static_cast<int64_t>(c0) * dh;
      int max_nc = 0;
      for (int r = 0; r < nr; ++r) {
        // Columns past key_end are beyond N (zero padding) or in the future: they get probability 0.
        const int nc = c0 + kTileK <= shared_key_end ? kTileK : std::clamp(hl.key_end(r0 + r) - c0, 0, kTileK);
        max_nc = std::max(max_nc, nc);
        float* sr = s + r * kTileK;
        if (nc == 0) {
          std::fill(sr, sr + kTileK, 0.0f);
          continue;
        }
        // Online softmax. With m the running maximum and l = sum_k exp(s_k - m) over the keys seen so far, a new
        // block of scores raises the maximum to m' = max(m, max_c s_c); everything accumulated so far was relative
        // to m and is rescaled by alpha = exp(m - m'):
        //   l' = alpha l + sum_c exp(s_c - m'),   acc' = alpha acc + sum_c exp(s_c - m') v_c.
        // After the last block, out = acc / l and lse = m + log l: exactly the full softmax, one block at a time.
        float m_new = m[r];
        for (int c = 0; c < nc; ++c) m_new = std::max(m_new, sr[c]);
        const float alpha = std::exp(m[r] - m_new);  // 0 on the first block (m = -inf)
        exp_row(sr, m_new, nc);
        float row_sum = 0.0f;
        for (int c = 0; c < nc; ++c) row_sum += sr[c];
        l[r] = alpha * l[r] + row_sum;
        m[r] = m_new;
        float* ar = acc + static_cast<int64_t>(r) * dh;
        for (int d = 0; d < dh; ++d) ar[d] *= alpha;
      }
      // acc [nr, dh] += p [nr, max_nc] v [max_nc, dh]
      block_gemm(acc, dh, s, kTileK, 1, vtile, dh, nr, dh, max_nc);
    }
    // Every query sees at least key 0, so l > 0.
    for (int r = 0; r < nr; ++r) {
      const float inv_l = 1.0f / l[r];
      float* o = out + hl.out_row(b, r0 + r) + static_cast<int64_t>(h) * dh;
      const float* ar = acc + static_cast<int64_t>(r) * dh;
      for (int d = 0; d < dh; ++d) o[d] = ar[d] * inv_l;
      lse[(static_cast<int64_t>(b) * hl.H + h) * N + r0 + r] = m[r] + std::log(l[r]);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Backward of one head. With P = softmax(S) row-wise and O = P V:
//   dV = P^T dO,   dP = dO V^T,   dS = P * (dP - D) with D_i = sum_j P_ij dP_ij = rowsum(dO_i * O_i),
//   dQ = dS K / sqrt(dh),   dK = dS^T Q / sqrt(dh).
// P is never stored: each block is recomputed from the scores and the forward's lse as P_ij = exp(S_ij - lse_i),
// which is already normalised, so no running max is needed here. D_i comes from dO and O (one dot product per row)
// instead of from P, so it is known before any block is visited.
void head_backward(float* dqkv, const float* dout, const float* qkv, const float* out, const float* lse,
                   const HeadLayout& hl, int b, int h, HeadBuffers& buf) {
  const int N = hl.N, dh = hl.dh;
  const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
  // Loaded exactly as forward, so the recomputed scores are the forward's bit for bit.
  load_head(buf.qs.data(), nullptr, qkv, hl, b, h, 0, scale);
  load_head(buf.k.data(), buf.kt.data(), qkv, hl, b, h, 1, 1.0f);
  load_head(nullptr, buf.vt.data(), qkv, hl, b, h, 2, 1.0f);
  for (int i = 0; i < N; ++i) {
    const float* o = out + hl.out_row(b, i) + static_cast<int64_t>(h) * dh;
    const float* g = dout + hl.out_row(b, i) + static_cast<int64_t>(h) * dh;
    float* gi = buf.dout.data() + static_cast<int64_t>(i) * dh;
    double dsum = 0.0;
    for (int d = 0; d < dh; ++d) {
      gi[d] = g[d];
      dsum += static_cast<double>(g[d]) * o[d];
    }
    buf.dsum[i] = static_cast<float>(dsum);
    buf.lse[i] = lse[(static_cast<int64_t>(b) * hl.H + h) * N + i];
  }
  std::fill(buf.dq.begin(), buf.dq.end(), 0.0f);
  std::fill(buf.dk.begin(), buf.dk.end(), 0.0f);
  std::fill(buf.dv.begin(), buf.dv.end(), 0.0f);
  float* p = buf.p.data();
  float* ds = buf.s.data();  // dP, then dS in place

  for (int r0 = 0; r0 < N; r0 += kTileQ) {
    const int nr = std::min(kTileQ, N - r0);
    const int tile_key_end = hl.key_end(r0 + nr - 1);
    const float* qs_tile = buf.qs.data() + static_cast<int64_t>(r0) * dh;
    const float* dout_tile = buf.dout.data() + static_cast<int64_t>(r0) * dh;
    for (int c0 = 0; c0 < tile_key_end; c0 += kTileK) {
      tile_product(p, qs_tile, buf.kt.data() + static_cast<int64_t>(c0) * dh, nr, dh);    // S
      tile_product(ds, dout_tile, buf.vt.data() + static_cast<int64_t>(c0) * dh, nr, dh);  // dP
      int max_nc = 0;
      for (int r = 0; r < nr; ++r) {
        const int nc = std::clamp(hl.key_end(r0 + r) - c0, 0, kTileK);
        max_nc = std::max(max_nc, nc);
        float* pr = p + r * kTileK;
        float* dsr = ds + r * kTileK;
        const float lse_r = buf.lse[r0 + r];
        const float dsum_r = buf.dsum[r0 + r];
        // Masked and padded columns get P = dS = 0 and contribute nothing below.
        exp_row(pr, lse_r, nc);
        for (int c = 0; c < kTileK; ++c) dsr[c] = pr[c] * (dsr[c] - dsum_r);
      }
      // dV [max_nc, dh] += P^T dO;  dK += dS^T qs (qs already carries 1/sqrt(dh));  dQ [nr, dh] += dS K
      // (times 1/sqrt(dh) at the end). P^T and dS^T are strided views of the blocks, not copies.
      float* dv_tile = buf.dv.data() + static_cast<int64_t>(c0) * dh;
      float* dk_tile = buf.dk.data() + static_cast<int64_t>(c0) * dh;
      float* dq_tile = buf.dq.data() + static_cast<int64_t>(r0) * dh;
      block_gemm(dv_tile, dh, p, 1, kTileK, dout_tile, dh, max_nc, dh, nr);
      block_gemm(dk_tile, dh, ds, 1, kTileK, qs_tile, dh, max_nc, dh, nr);
      block_gemm(dq_tile, dh, ds, kTileK, 1, buf.k.data() + static_cast<int64_t>(c0) * dh, dh, nr, dh, max_nc);
    }
  }
  for (int i = 0; i < N; ++i) {
    float* g = dqkv + hl.qkv_row(b, i) + static_cast<int64_t>(h) * dh;
    const int64_t row = static_cast<int64_t>(i) * dh;
    for (int d = 0; d < dh; ++d) {
      g[d] += buf.dq[row + d] * scale;
      g[hl.D + d] += buf.dk[row + d];
      g[2 * hl.D + d] += buf.dv[row + d];
    }
  }
}

}  // namespace

void attention_forward(float* out, float* lse, const float* qkv, int B, int N, int H, int dh, int causal_block) {
  check_sizes("attention_forward", B, N, H, dh, causal_block);
  const HeadLayout hl{N, H, dh, H * dh, causal_block};
  const int64_t n_pad = static_cast<int64_t>(hl.n_key_tiles()) * kTileK;
#pragma omp parallel
  {
    HeadBuffers buf;
    buf.qs.resize(n_pad * dh);
    buf.kt.resize(n_pad * dh);
    buf.v.resize(n_pad * dh, 0.0f);
    buf.s.resize(kTileQ * kTileK);
    buf.m.resize(kTileQ);
    buf.l.resize(kTileQ);
    buf.acc.resize(static_cast<size_t>(kTileQ) * dh);
#pragma omp for schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; ++bh) head_forward(out, lse, qkv, hl, bh / H, bh % H, buf);
  }
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out, const float* lse, int B,
                        int N, int H, int dh, int causal_block) {
  check_sizes("attention_backward", B, N, H, dh, causal_block);
  const HeadLayout hl{N, H, dh, H * dh, causal_block};
  const int64_t n_pad = static_cast<int64_t>(hl.n_key_tiles()) * kTileK;
#pragma omp parallel
  {
    HeadBuffers buf;
    for (auto* v : {&buf.qs, &buf.kt, &buf.k, &buf.vt, &buf.dout, &buf.dq, &buf.dk, &buf.dv}) v->resize(n_pad * dh);
    buf.lse.resize(N);
    buf.dsum.resize(N);
    buf.s.resize(kTileQ * kTileK);
    buf.p.resize(kTileQ * kTileK);
#pragma omp for schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; ++bh) head_backward(dqkv, dout, qkv, out, lse, hl, bh / H, bh % H, buf);
  }
}

}  // namespace bfm::kernels::cpu
