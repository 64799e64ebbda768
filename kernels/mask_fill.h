// The MAE decoder's input: the full token sequence rebuilt from the encoder's visible tokens.
// Visible token k of sample b sits at position visible_index[b, k]; every other position holds mask_token.
// Each position i = j * P + p then gets parcel_embed[p] + time_embed[j] added.
#pragma once
#include <cstdint>

namespace bfm::kernels::cpu {
// z [B, n_vis, D], mask_token [D], parcel_embed [P, D], time_embed [N / P, D], visible_index [B, n_vis]
// -> out [B, N, D] (overwritten).
void mask_fill_forward(float* out, const float* z, const float* mask_token, const float* parcel_embed,
                       const float* time_embed, const int32_t* visible_index, int B, int N, int n_vis, int P, int D);
// dout [B, N, D]: dz [B, n_vis, D] += ..., dmask_token [D] += ..., dparcel_embed += ..., dtime_embed += ...
// (each may be null). visible_index names distinct positions in [0, N) per sample (checked; any order).
void mask_fill_backward(float* dz, float* dmask_token, float* dparcel_embed, float* dtime_embed, const float* dout,
                        const int32_t* visible_index, int B, int N, int n_vis, int P, int D);
}  // namespace bfm::kernels::cpu

#ifdef BFM_WITH_CUDA
#include "kernels/cuda_types.h"
namespace bfm::kernels::cuda {
// visible_index is a device array; it must name distinct positions (the caller checked it on the host).
template <typename T>
void mask_fill_forward(T* out, const T* z, const float* mask_token, const float* parcel_embed,
                       const float* time_embed, const int32_t* visible_index, int B, int N, int n_vis, int P, int D,
                       cudaStream_t stream);
// Deterministic (no atomics).
template <typename T>
void mask_fill_backward(T* dz, float* dmask_token, float* dparcel_embed, float* dtime_embed, const T* dout,
                        const int32_t* visible_index, int B, int N, int n_vis, int P, int D, cudaStream_t stream);
}  // namespace bfm::kernels::cuda
#endif
