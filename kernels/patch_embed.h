// Tokens of a window and their embedding (MODEL_SPEC "Input and tokens").
// A window x [T, P] is cut into n_t = T / L time patches; token i = j * P + p holds x[j*L + l, p], l = 0..L-1.
// Embedding e_i = patch_embed(x_patch_i) + parcel_embed[p] + time_embed[j].
#pragma once
#include <cstdint>

namespace bfm::kernels::cpu {
// x [B, T, P] -> patches [B, N, L], N = (T / L) * P.
void patchify(float* patches, const float* x, int B, int T, int P, int L);

// patches [B, N, L]; w [D, L], b [D], parcel_embed [P, D], time_embed [N / P, D].
// token_index [B, n_tok] selects which tokens to embed, in that order (null: all N tokens, n_tok = N).
// out [B, n_tok, D] (overwritten).
void patch_embed_forward(float* out, const float* patches, const float* w, const float* b,
                         const float* parcel_embed, const float* time_embed, const int32_t* token_index,
                         int B, int N, int n_tok, int P, int L, int D);
// dout [B, n_tok, D]: dw [D, L] += ..., db [D] += ..., dparcel_embed [P, D] += ..., dtime_embed [N/P, D] += ...
// (db, dparcel_embed and dtime_embed may be null). N must be a multiple of P; token_index entries lie in [0, N).
void patch_embed_backward(float* dw, float* db, float* dparcel_embed, float* dtime_embed, const float* dout,
                          const float* patches, const int32_t* token_index, int B, int N, int n_tok, int P, int L,
                          int D);
}  // namespace bfm::kernels::cpu

#ifdef BFM_WITH_CUDA
#include "kernels/cuda_types.h"
namespace bfm::kernels::cuda {
// Same shapes as the CPU twins. patches stay fp32 (they are also the loss targets); w, b, parcel_embed, time_embed
// are the fp32 master copy; token_index is a device array (null: all tokens).
void patchify(float* patches, const float* x, int B, int T, int P, int L, cudaStream_t stream);
template <typename T>
void patch_embed_forward(T* out, const float* patches, const float* w, const float* b, const float* parcel_embed,
                         const float* time_embed, const int32_t* token_index, int B, int N, int n_tok, int P, int L,
                         int D, cudaStream_t stream);
// Deterministic (no atomics): parameter gradients are reduced in a fixed order.
template <typename T>
void patch_embed_backward(float* dw, float* db, float* dparcel_embed, float* dtime_embed, const T* dout,
                          const float* patches, const int32_t* token_index, int B, int N, int n_tok, int P, int L,
                          int D, cudaStream_t stream);
}  // namespace bfm::kernels::cuda
#endif
