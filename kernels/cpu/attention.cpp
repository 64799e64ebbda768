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
// small row-major GEMM (block_gemm) over contiguous floats, in FloatV vectors (as wide as the target's registers:
// 16 lanes on AVX-512) with a register-blocked inner kernel:
//   qs [N, dh_pad]                q / sqrt(dh), rows (dh_pad: dh rounded up to whole vectors, pad columns zero)
//   kt [n_key_tiles][dh][kTileK]  k transposed tile by tile, zero-padded: scores = qs_tile kt_tile
//   v  [N_pad, dh_pad]            v rows: acc += P v_tile
// Backward also keeps k rows (dq += dS k_tile), v^T tiles (dP = dO vt_tile), dO rows and dq, dk, dv [N_pad, dh_pad].
// Time-causal key tiles wholly in the future of a query tile are skipped; the tiles that straddle a patch boundary
// are masked row by row (probability 0 beyond key_end).
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/vec_math.h"
#include "base/error.h"

namespace bfm::kernels::cpu {
namespace {

constexpr int kTileQ = 64;
constexpr int kTileK = 64;
static_assert(kTileK % kLanes == 0, "score rows are whole FloatV vectors");
constexpr int kRowVecs = kTileK / kLanes;  // FloatV vectors in one row of a score block
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Where head h of sample b sits in qkv / out / lse, and which keys each query may see.
struct HeadLayout {
  int N, H, dh, D, causal_block;

  // Row stride of the per-head [N, dh] buffers: dh rounded up to whole FloatV vectors, so that every product with
  // dh output columns runs on full vectors (the pad columns of q, k, v and dO are zero, those of the results unused).
  int dh_pad() const { return (dh + kLanes - 1) / kLanes * kLanes; }
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
// rows [N, dh_pad] scaled by `scale` (rows may be null), and/or transposed key tiles [n_key_tiles][dh][kTileK]
// (tiles may be null). Entries beyond N and dh are never written, so they keep the zeros of the first fill.
void load_head(float* rows, float* tiles, const float* qkv, const HeadLayout& hl, int b, int h, int col, float scale) {
  const int dh = hl.dh;
  for (int i = 0; i < hl.N; ++i) {
    const float* src = qkv + hl.qkv_row(b, i) + static_cast<int64_t>(col) * hl.D + static_cast<int64_t>(h) * dh;
    if (rows != nullptr)
      for (int d = 0; d < dh; ++d) rows[static_cast<int64_t>(i) * hl.dh_pad() + d] = src[d] * scale;
    if (tiles != nullptr) {
      float* tile = tiles + static_cast<int64_t>(i / kTileK) * dh * kTileK + i % kTileK;
      for (int d = 0; d < dh; ++d) tile[d * kTileK] = src[d];
    }
  }
}

// The one matrix product of this file, on blocks that fit in L1: C [m, n] (+)= A [m, k] B [k, n], with
// A(i, kk) = a[i * a_rs + kk * a_cs] (so A may be a transposed view: P^T, dS^T), B and C row-major with leading
// dimensions ldb and ldc, n a multiple of kLanes. Overwrites C unless `accumulate`.
//
// gemm_block keeps a kRows x (kVecs FloatV) block of C in registers across the whole k loop, each step loading kVecs
// vectors of one row of B and broadcasting kRows entries of A against them. The block is as wide as n allows (up to
// 4 vectors: the 64 columns of a score row on AVX-512, 16 .. 64 of dh) and as tall as the accumulator registers
// allow, so that each loaded operand feeds several FMAs.
constexpr int kAccumulators = kVecRegisters / 2;

template <int kRows, int kVecs>
void gemm_block(float* c, int ldc, const float* a, int a_rs, int a_cs, const float* b, int ldb, int k,
                bool accumulate) {
  FloatV acc[kRows][kVecs] = {};
  for (int kk = 0; kk < k; ++kk) {
    const float* bk = b + static_cast<int64_t>(kk) * ldb;
    FloatV bv[kVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) bv[v] = load_lanes<FloatV>(bk + v * kLanes);
    const float* ak = a + static_cast<int64_t>(kk) * a_cs;
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      const float x = ak[r * a_rs];
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) acc[r][v] += x * bv[v];
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) {
      float* cv = c + static_cast<int64_t>(r) * ldc + v * kLanes;
      if (accumulate)
        add_lanes(cv, acc[r][v]);
      else
        store_lanes(cv, acc[r][v]);
    }
  }
}

// One panel of kVecs vector columns over all m rows: full blocks of kRows, then the leftover rows in blocks of
// half as many, and so on down to one.
template <int kRows, int kVecs>
void gemm_panel(float* c, int ldc, const float* a, int a_rs, int a_cs, const float* b, int ldb, int m, int k,
                bool accumulate) {
  int i = 0;
  for (; i + kRows <= m; i += kRows)
    gemm_block<kRows, kVecs>(c + static_cast<int64_t>(i) * ldc, ldc, a + static_cast<int64_t>(i) * a_rs, a_rs, a_cs,
                             b, ldb, k, accumulate);
  if constexpr (kRows > 1)
    if (i < m)
      gemm_panel<kRows / 2, kVecs>(c + static_cast<int64_t>(i) * ldc, ldc, a + static_cast<int64_t>(i) * a_rs, a_rs,
                                   a_cs, b, ldb, m - i, k, accumulate);
}

void block_gemm(float* c, int ldc, const float* a, int a_rs, int a_cs, const float* b, int ldb, int m, int n, int k,
                bool accumulate) {
  int j = 0;
  for (; j + 4 * kLanes <= n; j += 4 * kLanes)
    gemm_panel<kAccumulators / 4, 4>(c + j, ldc, a, a_rs, a_cs, b + j, ldb, m, k, accumulate);
  if (j + 2 * kLanes <= n) {
    gemm_panel<kAccumulators / 2, 2>(c + j, ldc, a, a_rs, a_cs, b + j, ldb, m, k, accumulate);
    j += 2 * kLanes;
  }
  if (j < n) gemm_panel<kAccumulators, 1>(c + j, ldc, a, a_rs, a_cs, b + j, ldb, m, k, accumulate);
}

// s [nr][kTileK] = a [nr, dh] (rows, stride dh_pad) * bt [dh][kTileK]: the scores q k^T of a block, and dO v^T.
void tile_product(float* s, const float* a, int dh_pad, const float* bt, int nr, int dh) {
  block_gemm(s, kTileK, a, dh_pad, 1, bt, kTileK, nr, kTileK, dh, /*accumulate=*/false);
}

// Columns [n, kTileK) of a score row get -inf: probability exactly 0 once through exp_lanes.
void mask_row(float* row, int n) { std::fill(row + n, row + kTileK, kNegInf); }

// Per-thread scratch, sized once per call and reused for every head the thread owns.
struct HeadBuffers {
  std::vector<float> qs, kt, v, k, vt, dout, dq, dk, dv;
  std::vector<float> lse, dsum;  // [N]
  std::vector<float> s, p;       // [kTileQ][kTileK]
  std::vector<float> m, l, acc;  // forward running max / sum [kTileQ], output accumulator [kTileQ, dh_pad]
};

// ---------------------------------------------------------------------------------------------------------------
// Forward of one head.
void head_forward(float* out, float* lse, const float* qkv, const HeadLayout& hl, int b, int h, HeadBuffers& buf) {
  const int N = hl.N, dh = hl.dh, ld = hl.dh_pad();
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

    // Key tiles wholly in the future of every row of this query tile are skipped.
    for (int c0 = 0; c0 < tile_key_end; c0 += kTileK) {
      tile_product(s, buf.qs.data() + static_cast<int64_t>(r0) * ld, ld, buf.kt.data() + static_cast<int64_t>(c0) * dh,
                   nr, dh);
      int max_nc = 0;
      for (int r = 0; r < nr; ++r) {
        // Columns past key_end are beyond N (zero padding) or in the future: they get probability 0.
        const int nc = c0 + kTileK <= shared_key_end ? kTileK : std::clamp(hl.key_end(r0 + r) - c0, 0, kTileK);
        max_nc = std::max(max_nc, nc);
        float* sr = s + r * kTileK;
        if (nc < kTileK) mask_row(sr, nc);
        // Online softmax. With m the running maximum and l = sum_k exp(s_k - m) over the keys seen so far, a new
        // block of scores raises the maximum to m' = max(m, max_c s_c); everything accumulated so far was relative
        // to m and is rescaled by alpha = exp(m - m'):
        //   l' = alpha l + sum_c exp(s_c - m'),   acc' = alpha acc + sum_c exp(s_c - m') v_c.
        // After the last block, out = acc / l and lse = m + log l: exactly the full softmax, one block at a time.
        // Every row sees key 0 in the first block, so m' is finite from then on (a fully masked row keeps m).
        FloatV row[kRowVecs];
        for (int v = 0; v < kRowVecs; ++v) row[v] = load_lanes<FloatV>(sr + v * kLanes);
        FloatV row_max = row[0];
        for (int v = 1; v < kRowVecs; ++v) row_max = max_lanewise(row_max, row[v]);
        const float m_new = std::max(m[r], max_lanes(row_max));
        FloatV row_sum = {};
        for (int v = 0; v < kRowVecs; ++v) {
          const FloatV e = exp_lanes(row[v] - m_new);
          store_lanes(sr + v * kLanes, e);
          row_sum += e;
        }
        const float alpha = std::exp(m[r] - m_new);  // 0 on the first block (m = -inf)
        l[r] = alpha * l[r] + sum_lanes(row_sum);
        m[r] = m_new;
        float* ar = acc + static_cast<int64_t>(r) * ld;
        if (c0 > 0)
          for (int d = 0; d < ld; d += kLanes) store_lanes(ar + d, alpha * load_lanes<FloatV>(ar + d));
      }
      // acc [nr, dh_pad] (+)= p [nr, max_nc] v [max_nc, dh_pad]; the first key block overwrites.
      block_gemm(acc, ld, s, kTileK, 1, buf.v.data() + static_cast<int64_t>(c0) * ld, ld, nr, ld, max_nc,
                 /*accumulate=*/c0 > 0);
    }
    // Every query sees at least key 0, so l > 0.
    for (int r = 0; r < nr; ++r) {
      const float inv_l = 1.0f / l[r];
      float* o = out + hl.out_row(b, r0 + r) + static_cast<int64_t>(h) * dh;
      const float* ar = acc + static_cast<int64_t>(r) * ld;
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
  const int N = hl.N, dh = hl.dh, ld = hl.dh_pad();
  const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
  // Loaded exactly as forward, so the recomputed scores are the forward's bit for bit.
  load_head(buf.qs.data(), nullptr, qkv, hl, b, h, 0, scale);
  load_head(buf.k.data(), buf.kt.data(), qkv, hl, b, h, 1, 1.0f);
  load_head(nullptr, buf.vt.data(), qkv, hl, b, h, 2, 1.0f);
  for (int i = 0; i < N; ++i) {
    const float* o = out + hl.out_row(b, i) + static_cast<int64_t>(h) * dh;
    const float* g = dout + hl.out_row(b, i) + static_cast<int64_t>(h) * dh;
    float* gi = buf.dout.data() + static_cast<int64_t>(i) * ld;
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
    const float* qs_tile = buf.qs.data() + static_cast<int64_t>(r0) * ld;
    const float* dout_tile = buf.dout.data() + static_cast<int64_t>(r0) * ld;
    for (int c0 = 0; c0 < tile_key_end; c0 += kTileK) {
      tile_product(p, qs_tile, ld, buf.kt.data() + static_cast<int64_t>(c0) * dh, nr, dh);    // S
      tile_product(ds, dout_tile, ld, buf.vt.data() + static_cast<int64_t>(c0) * dh, nr, dh);  // dP
      int max_nc = 0;
      for (int r = 0; r < nr; ++r) {
        const int nc = std::clamp(hl.key_end(r0 + r) - c0, 0, kTileK);
        max_nc = std::max(max_nc, nc);
        float* pr = p + r * kTileK;
        float* dsr = ds + r * kTileK;
        const float lse_r = buf.lse[r0 + r];
        const float dsum_r = buf.dsum[r0 + r];
        // Masked and padded columns get P = dS = 0 and contribute nothing below.
        if (nc < kTileK) mask_row(pr, nc);
        for (int c = 0; c < kTileK; c += kLanes) {
          const FloatV pc = exp_lanes(load_lanes<FloatV>(pr + c) - lse_r);
          store_lanes(pr + c, pc);
          store_lanes(dsr + c, pc * (load_lanes<FloatV>(dsr + c) - dsum_r));
        }
      }
      // dV [max_nc, dh_pad] += P^T dO;  dK += dS^T qs (qs already carries 1/sqrt(dh));  dQ [nr, dh_pad] += dS K
      // (times 1/sqrt(dh) at the end). P^T and dS^T are strided views of the blocks, not copies.
      float* dv_tile = buf.dv.data() + static_cast<int64_t>(c0) * ld;
      float* dk_tile = buf.dk.data() + static_cast<int64_t>(c0) * ld;
      float* dq_tile = buf.dq.data() + static_cast<int64_t>(r0) * ld;
      const float* k_tile = buf.k.data() + static_cast<int64_t>(c0) * ld;
      block_gemm(dv_tile, ld, p, 1, kTileK, dout_tile, ld, max_nc, ld, nr, /*accumulate=*/true);
      block_gemm(dk_tile, ld, ds, 1, kTileK, qs_tile, ld, max_nc, ld, nr, /*accumulate=*/true);
      block_gemm(dq_tile, ld, ds, kTileK, 1, k_tile, ld, nr, ld, max_nc, /*accumulate=*/true);
    }
  }
  for (int i = 0; i < N; ++i) {
    float* g = dqkv + hl.qkv_row(b, i) + static_cast<int64_t>(h) * dh;
    const int64_t row = static_cast<int64_t>(i) * ld;
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
    HeadBuffers buf;  // zero-filled: load_head leaves the padding as it finds it
    buf.qs.resize(n_pad * hl.dh_pad());
    buf.kt.resize(n_pad * dh);
    buf.v.resize(n_pad * hl.dh_pad());
    buf.s.resize(kTileQ * kTileK);
    buf.m.resize(kTileQ);
    buf.l.resize(kTileQ);
    buf.acc.resize(static_cast<size_t>(kTileQ) * hl.dh_pad());
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
    HeadBuffers buf;  // zero-filled: load_head leaves the padding as it finds it
    buf.kt.resize(n_pad * dh);
    buf.vt.resize(n_pad * dh);
    for (auto* v : {&buf.qs, &buf.k, &buf.dout, &buf.dq, &buf.dk, &buf.dv}) v->resize(n_pad * hl.dh_pad());
    buf.lse.resize(N);
    buf.dsum.resize(N);
    buf.s.resize(kTileQ * kTileK);
    buf.p.resize(kTileQ * kTileK);
#pragma omp for schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; ++bh) head_backward(dqkv, dout, qkv, out, lse, hl, bh / H, bh % H, buf);
  }
}

}  // namespace bfm::kernels::cpu
