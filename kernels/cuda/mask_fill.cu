// The MAE decoder's input on the GPU (kernels/cpu/mask_fill.cpp is its oracle): position i = j * P + p of sample b
// holds the encoder token z[b, k] where visible_index[b, k] = i, mask_token elsewhere, plus parcel_embed[p] +
// time_embed[j]. z, out, dz, dout are T; mask_token and the embeddings are the fp32 master copy.
//
// Both directions first scatter the inverse map slot [B, N] (k at visible positions, -1 elsewhere; distinct positions
// make it race-free) into scratch, so every output element is computed by one thread with no write conflicts:
//  - forward: one thread per out element, reading z through the map or mask_token;
//  - dz: one thread per dz element, gathering dout at visible_index;
//  - dmask_token, dparcel_embed, dtime_embed: detail::embedding_grads, sums over positions in a fixed order.
#include "kernels/cuda/common.cuh"
#include "kernels/mask_fill.h"

namespace bfm::kernels::cuda {
namespace {

using detail::from_float;
using detail::to_float;

constexpr int kScratchSlots = 1, kScratchEmbed = 2;  // scratch slots used here

// out [B, N, D]
template <typename T>
__global__ void mask_fill_forward_kernel(T* __restrict__ out, const T* __restrict__ z,
                                         const float* __restrict__ mask_token, const float* __restrict__ parcel_embed,
                                         const float* __restrict__ time_embed, const int32_t* __restrict__ slot,
                                         int B, int N, int n_vis, int P, int D) {
  const int64_t total = int64_t(B) * N * D;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = e / D;  // b * N + i
    const int d = static_cast<int>(e - row * D);
    const int64_t b = row / N;
    const int i = static_cast<int>(row - b * N);
    const int k = slot[row];
    const float token = k >= 0 ? to_float(z[(b * n_vis + k) * D + d]) : mask_token[d];
    out[e] = from_float<T>(token + parcel_embed[int64_t(i % P) * D + d] + time_embed[int64_t(i / P) * D + d]);
  }
}

// dz [B, n_vis, D] += dout at the visible positions.
template <typename T>
__global__ void mask_fill_dz_kernel(T* __restrict__ dz, const T* __restrict__ dout,
                                    const int32_t* __restrict__ visible_index, int B, int N, int n_vis, int D) {
  const int64_t total = int64_t(B) * n_vis * D;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = e / D;  // b * n_vis + k
    const int d = static_cast<int>(e - row * D);
    const int64_t b = row / n_vis;
    const int i = visible_index[row];
    if (i < 0 || i >= N) continue;
    dz[e] = from_float<T>(to_float(dz[e]) + to_float(dout[(b * N + i) * D + d]));
  }
}

void check_sizes(const char* op, int B, int N, int n_vis, int P, int D) {
  require(B >= 0 && N >= 0 && n_vis >= 0 && n_vis <= N && P > 0 && D > 0, op, ": bad sizes B=", B, " N=", N,
          " n_vis=", n_vis, " P=", P, " D=", D);
  require(N % P == 0, op, ": N=", N, " is not a multiple of the parcel count P=", P);
}

}  // namespace

template <typename T>
void mask_fill_forward(T* out, const T* z, const float* mask_token, const float* parcel_embed,
                       const float* time_embed, const int32_t* visible_index, int B, int N, int n_vis, int P, int D,
                       cudaStream_t stream) {
  check_sizes("cuda::mask_fill_forward", B, N, n_vis, P, D);
  if (int64_t(B) * N == 0) return;
  auto* slot = static_cast<int32_t*>(detail::scratch(sizeof(int32_t) * B * size_t(N), stream, kScratchSlots));
  detail::inverse_index(slot, visible_index, B, N, n_vis, stream, "cuda::mask_fill_forward (inverse index)");
  const int64_t total = int64_t(B) * N * D;
  mask_fill_forward_kernel<T><<<detail::grid_for(total, 256), 256, 0, stream>>>(out, z, mask_token, parcel_embed,
                                                                                time_embed, slot, B, N, n_vis, P, D);
  detail::check_launch("cuda::mask_fill_forward");
}

template <typename T>
void mask_fill_backward(T* dz, float* dmask_token, float* dparcel_embed, float* dtime_embed, const T* dout,
                        const int32_t* visible_index, int B, int N, int n_vis, int P, int D, cudaStream_t stream) {
  check_sizes("cuda::mask_fill_backward", B, N, n_vis, P, D);
  if (int64_t(B) * N == 0) return;
  if (dz != nullptr && n_vis > 0) {
    const int64_t total = int64_t(B) * n_vis * D;
    mask_fill_dz_kernel<T><<<detail::grid_for(total, 256), 256, 0, stream>>>(dz, dout, visible_index, B, N, n_vis, D);
    detail::check_launch("cuda::mask_fill_backward (dz)");
  }
  int32_t* slot = nullptr;  // only dmask_token needs to know which positions are visible
  if (dmask_token != nullptr) {
    slot = static_cast<int32_t*>(detail::scratch(sizeof(int32_t) * B * size_t(N), stream, kScratchSlots));
    detail::inverse_index(slot, visible_index, B, N, n_vis, stream, "cuda::mask_fill_backward (inverse index)");
  }
  // dout is indexed by position directly (row_of = null, N rows per sample).
  detail::embedding_grads<T>(dparcel_embed, dtime_embed, dmask_token, dout, nullptr, slot, B, N, N, P, D,
                             kScratchEmbed, stream, "cuda::mask_fill_backward (embeddings)");
}

template void mask_fill_forward<float>(float*, const float*, const float*, const float*, const float*,
                                       const int32_t*, int, int, int, int, int, cudaStream_t);
template void mask_fill_forward<bf16>(bf16*, const bf16*, const float*, const float*, const float*, const int32_t*,
                                      int, int, int, int, int, cudaStream_t);
template void mask_fill_backward<float>(float*, float*, float*, float*, const float*, const int32_t*, int, int, int,
                                        int, int, cudaStream_t);
template void mask_fill_backward<bf16>(bf16*, float*, float*, float*, const bf16*, const int32_t*, int, int, int, int,
                                       int, cudaStream_t);

}  // namespace bfm::kernels::cuda
