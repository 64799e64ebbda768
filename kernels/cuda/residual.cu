// Residual stream add on the GPU, out = a + b elementwise (kernels/cpu/residual.cpp is its oracle), in fp32 for
// T = float or bf16. out may alias a (h = h + f(h)): each element is read and written by the same thread, so no
// __restrict__ here. One thread per 16-byte pack when every pointer is 16-byte aligned, per element otherwise.
#include "kernels/cuda/common.cuh"
#include "kernels/residual.h"

namespace bfm::kernels::cuda {
namespace {

using detail::Pack16;
using detail::from_float;
using detail::to_float;

constexpr int kBlock = 256;

template <typename T, bool kVector>
__global__ void residual_forward_kernel(T* out, const T* a, const T* b, int64_t n) {
  constexpr int K = kVector ? Pack16<T>::kSize : 1;
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t n_packs = n / K;
  for (int64_t k = tid; k < n_packs; k += stride) {
    if constexpr (kVector) {
      const Pack16<T> pa = reinterpret_cast<const Pack16<T>*>(a)[k];
      const Pack16<T> pb = reinterpret_cast<const Pack16<T>*>(b)[k];
      Pack16<T> sum;
#pragma unroll
      for (int e = 0; e < K; ++e) sum.v[e] = from_float<T>(to_float(pa.v[e]) + to_float(pb.v[e]));
      reinterpret_cast<Pack16<T>*>(out)[k] = sum;
    } else {
      out[k] = from_float<T>(to_float(a[k]) + to_float(b[k]));
    }
  }
  for (int64_t i = n_packs * K + tid; i < n; i += stride) out[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));
}

}  // namespace

template <typename T>
void residual_forward(T* out, const T* a, const T* b, int64_t n, cudaStream_t stream) {
  require(n >= 0, "cuda::residual_forward: bad size n=", n);
  if (n == 0) return;
  if (detail::aligned16(out) && detail::aligned16(a) && detail::aligned16(b)) {
    const int grid = detail::grid_for(n / Pack16<T>::kSize + 1, kBlock);
    residual_forward_kernel<T, true><<<grid, kBlock, 0, stream>>>(out, a, b, n);
  } else {
    residual_forward_kernel<T, false><<<detail::grid_for(n, kBlock), kBlock, 0, stream>>>(out, a, b, n);
  }
  detail::check_launch("cuda::residual_forward");
}

template void residual_forward<float>(float*, const float*, const float*, int64_t, cudaStream_t);
template void residual_forward<bf16>(bf16*, const bf16*, const bf16*, int64_t, cudaStream_t);

}  // namespace bfm::kernels::cuda
