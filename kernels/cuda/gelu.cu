// tanh-GELU on the GPU, elementwise; kernels/cpu/gelu.cpp is its oracle (same formulas, same constants):
//   gelu(u) = 0.5 u (1 + tanh a) = u s,  a = sqrt(2/pi) (u + 0.044715 u^3),  s = sigmoid(2a) = (1 + tanh a) / 2,
// written through the sigmoid so that the far negative tail has no cancellation in 1 + tanh a.
// T = float or bf16, computed in fp32. One thread per 16-byte pack (4 float or 8 bf16) when every pointer is 16-byte
// aligned, the ragged end element by element; one thread per element otherwise. Grid-stride, so any n works.
#include "kernels/cuda/common.cuh"
#include "kernels/gelu.h"

namespace bfm::kernels::cuda {
namespace {

using detail::Pack16;
using detail::from_float;
using detail::to_float;

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCoeff = 0.044715f;
constexpr int kBlock = 256;

__device__ __forceinline__ float sigmoid_2a(float u) {
  return 1.0f / (1.0f + expf(-2.0f * kSqrt2OverPi * (u + kCoeff * u * u * u)));
}

__device__ __forceinline__ float gelu(float u) { return u * sigmoid_2a(u); }

// d/du [0.5 u (1 + tanh a)] = s + 2 u s (1 - s) a',  a' = sqrt(2/pi) (1 + 3 * 0.044715 u^2)
__device__ __forceinline__ float gelu_grad(float u) {
  const float s = sigmoid_2a(u);
  const float da = kSqrt2OverPi * (1.0f + 3.0f * kCoeff * u * u);
  return s + 2.0f * u * s * (1.0f - s) * da;
}

// y [n] = gelu(x). kVector: whole 16-byte packs first, then the ragged end.
template <typename T, bool kVector>
__global__ void gelu_forward_kernel(T* __restrict__ y, const T* __restrict__ x, int64_t n) {
  constexpr int K = kVector ? Pack16<T>::kSize : 1;
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t n_packs = n / K;
  for (int64_t k = tid; k < n_packs; k += stride) {
    if constexpr (kVector) {
      const Pack16<T> in = reinterpret_cast<const Pack16<T>*>(x)[k];
      Pack16<T> out;
#pragma unroll
      for (int e = 0; e < K; ++e) out.v[e] = from_float<T>(gelu(to_float(in.v[e])));
      reinterpret_cast<Pack16<T>*>(y)[k] = out;
    } else {
      y[k] = from_float<T>(gelu(to_float(x[k])));
    }
  }
  for (int64_t i = n_packs * K + tid; i < n; i += stride) y[i] = from_float<T>(gelu(to_float(x[i])));
}

// dx [n] += dy * gelu'(x)
template <typename T, bool kVector>
__global__ void gelu_backward_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ x,
                                     int64_t n) {
  constexpr int K = kVector ? Pack16<T>::kSize : 1;
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t n_packs = n / K;
  for (int64_t k = tid; k < n_packs; k += stride) {
    if constexpr (kVector) {
      const Pack16<T> xs = reinterpret_cast<const Pack16<T>*>(x)[k];
      const Pack16<T> dys = reinterpret_cast<const Pack16<T>*>(dy)[k];
      Pack16<T> acc = reinterpret_cast<const Pack16<T>*>(dx)[k];
#pragma unroll
      for (int e = 0; e < K; ++e)
        acc.v[e] = from_float<T>(to_float(acc.v[e]) + to_float(dys.v[e]) * gelu_grad(to_float(xs.v[e])));
      reinterpret_cast<Pack16<T>*>(dx)[k] = acc;
    } else {
      dx[k] = from_float<T>(to_float(dx[k]) + to_float(dy[k]) * gelu_grad(to_float(x[k])));
    }
  }
  for (int64_t i = n_packs * K + tid; i < n; i += stride)
    dx[i] = from_float<T>(to_float(dx[i]) + to_float(dy[i]) * gelu_grad(to_float(x[i])));
}

}  // namespace

template <typename T>
void gelu_forward(T* y, const T* x, int64_t n, cudaStream_t stream) {
  require(n >= 0, "cuda::gelu_forward: bad size n=", n);
  if (n == 0) return;
  if (detail::aligned16(y) && detail::aligned16(x)) {
    const int grid = detail::grid_for(n / Pack16<T>::kSize + 1, kBlock);
    gelu_forward_kernel<T, true><<<grid, kBlock, 0, stream>>>(y, x, n);
  } else {
    gelu_forward_kernel<T, false><<<detail::grid_for(n, kBlock), kBlock, 0, stream>>>(y, x, n);
  }
  detail::check_launch("cuda::gelu_forward");
}

template <typename T>
void gelu_backward(T* dx, const T* dy, const T* x, int64_t n, cudaStream_t stream) {
  require(n >= 0, "cuda::gelu_backward: bad size n=", n);
  if (n == 0) return;
  if (detail::aligned16(dx) && detail::aligned16(dy) && detail::aligned16(x)) {
    const int grid = detail::grid_for(n / Pack16<T>::kSize + 1, kBlock);
    gelu_backward_kernel<T, true><<<grid, kBlock, 0, stream>>>(dx, dy, x, n);
  } else {
    gelu_backward_kernel<T, false><<<detail::grid_for(n, kBlock), kBlock, 0, stream>>>(dx, dy, x, n);
  }
  detail::check_launch("cuda::gelu_backward");
}

template void gelu_forward<float>(float*, const float*, int64_t, cudaStream_t);
template void gelu_forward<bf16>(bf16*, const bf16*, int64_t, cudaStream_t);
template void gelu_backward<float>(float*, const float*, const float*, int64_t, cudaStream_t);
template void gelu_backward<bf16>(bf16*, const bf16*, const bf16*, int64_t, cudaStream_t);

}  // namespace bfm::kernels::cuda
