// Throughput of bfm's bf16 fused attention (kernels/cuda/attention.cu) on one GPU: forward, and forward + backward,
// for N = 1024, 2048, 4096, dh = 64 and 128, bidirectional and time-causal. bench/attention_torch.py times PyTorch's
// scaled_dot_product_attention on the same shapes; bench/ATTENTION_NOTES.md says how to read the two together.
//
// Shapes: B = 8 samples, D = H * dh = 768 (H = 12 heads of 64, or 6 of 128), so every N has B*H*N / 128 = 768 to
// 3072 forward blocks: several waves on any current GPU. Time-causal mode uses causal_block = 128 (time patches of
// 128 tokens).
// FLOPs, FlashAttention's convention: forward 4 B H N^2 dh (two N x N x dh products), halved for causal; backward
// 2.5 times forward (five products, the recomputation of S not counted); so forward + backward = 3.5 times forward.
// Timing: 3 warm-up calls, then the median over `reps` (default 20) calls, each between two cudaEvents.
//
// Usage: bench_attention [reps]     prints "impl,mode,N,dh,fwd_tflops,fwdbwd_tflops" rows (milliseconds to stderr)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <vector>

#include "kernels/attention.h"
#include "runtime/error.h"

namespace {

using bfm::kernels::cuda::bf16;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) bfm::fail("bench_attention: ", what, ": ", cudaGetErrorString(err));
}

// Uniform values in [-amplitude, amplitude] from a hash of the index: inputs without a host round trip.
__global__ void fill_uniform(bf16* x, int64_t n, uint32_t seed, float amplitude) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ (uint32_t(i >> 32) + seed) * 2246822519u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    x[i] = __float2bfloat16_rn((float(h >> 8) * (1.0f / 16777216.0f) * 2.0f - 1.0f) * amplitude);
  }
}

template <typename T>
struct Device {
  T* ptr = nullptr;
  explicit Device(size_t n) { check(cudaMalloc(&ptr, n * sizeof(T)), "cudaMalloc"); }
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
  ~Device() { cudaFree(ptr); }
};

// Median milliseconds of `reps` calls of run(), each timed alone; prepare() runs before each, outside the timing.
template <class Prepare, class Run>
float median_ms(int reps, Prepare prepare, Run run) {
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  for (int i = 0; i < 3; ++i) {
    prepare();
    run();
  }
  std::vector<float> ms(reps);
  for (int i = 0; i < reps; ++i) {
    prepare();
    check(cudaEventRecord(start), "cudaEventRecord");
    run();
    check(cudaEventRecord(stop), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    check(cudaEventElapsedTime(&ms[i], start, stop), "cudaEventElapsedTime");
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[reps / 2];
}

void bench_shape(int N, int dh, bool causal, int reps) {
  const int B = 8, D = 768, H = D / dh;
  const int causal_block = causal ? 128 : 0;
  const size_t qkv_n = size_t(B) * N * 3 * D, out_n = size_t(B) * N * D, lse_n = size_t(B) * H * N;
  Device<bf16> qkv(qkv_n), out(out_n), dout(out_n), dqkv(qkv_n);
  Device<float> lse(lse_n);
  fill_uniform<<<1024, 256>>>(qkv.ptr, int64_t(qkv_n), 1, 1.0f);
  fill_uniform<<<1024, 256>>>(dout.ptr, int64_t(out_n), 2, 1.0f);
  check(cudaGetLastError(), "fill_uniform");
  check(cudaDeviceSynchronize(), "fill_uniform");

  const auto forward = [&] {
    bfm::kernels::cuda::attention_forward<bf16>(out.ptr, lse.ptr, qkv.ptr, B, N, H, dh, causal_block, nullptr);
  };
  const auto backward = [&] {
    bfm::kernels::cuda::attention_backward<bf16>(dqkv.ptr, dout.ptr, qkv.ptr, out.ptr, lse.ptr, B, N, H, dh,
                                                 causal_block, nullptr);
  };
  const auto nothing = [] {};
  // The backward adds into dqkv: zero it before each timed step, as a training step would once.
  const auto zero_grad = [&] { check(cudaMemsetAsync(dqkv.ptr, 0, qkv_n * sizeof(bf16)), "cudaMemsetAsync"); };
  const float fwd_ms = median_ms(reps, nothing, forward);
  const float step_ms = median_ms(reps, zero_grad, [&] {
    forward();
    backward();
  });
  check(cudaDeviceSynchronize(), "attention");

  const double fwd_flops = 4.0 * B * H * double(N) * N * dh * (causal ? 0.5 : 1.0);
  const char* mode = causal ? "causal" : "bidir";
  std::printf("bfm,%s,%d,%d,%.1f,%.1f\n", mode, N, dh, fwd_flops / (fwd_ms * 1e9), 3.5 * fwd_flops / (step_ms * 1e9));
  std::fflush(stdout);
  std::fprintf(stderr, "bfm %s N=%d dh=%d B=%d H=%d causal_block=%d: forward %.3f ms, forward+backward %.3f ms\n",
               mode, N, dh, B, H, causal_block, fwd_ms, step_ms);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int reps = argc > 1 ? std::atoi(argv[1]) : 20;
    if (reps < 1) bfm::fail("bench_attention: reps must be at least 1, got '", argv[1], "'");
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    std::fprintf(stderr, "device: %s (sm_%d%d), %d reps\n", prop.name, prop.major, prop.minor, reps);
    std::printf("impl,mode,N,dh,fwd_tflops,fwdbwd_tflops\n");
    for (const bool causal : {false, true})
      for (const int dh : {64, 128})
        for (const int N : {1024, 2048, 4096}) bench_shape(N, dh, causal, reps);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
