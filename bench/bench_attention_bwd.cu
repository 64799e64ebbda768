// The bf16 attention backward alone: the portable kernels (cuda::attention_backward<bf16>, mma.sync) against the
// Hopper variant (kernels/cuda/attention_sm90_bwd.cu, wgmma, sm_90a) on the same inputs, for N = 1024, 2048, 4096,
// dh 64 (B = 8, H = 12) and dh 128 (B = 8, H = 6), bidirectional and time-causal (causal_block = 128).
//
// FLOPs, FlashAttention's convention (as bench_attention.cu): backward = 2.5 x forward = 2.5 x 4 B H N^2 dh, halved
// for causal. Timing: 3 warm-up calls, then the median over `reps` (default 20) calls, each between two
// cudaEvents; dqkv is zeroed (outside the timing) before each call, as a training step would. out and lse come
// from one call of attention_forward<bf16> (whichever forward it picks). After timing, one call of each backward
// from a zeroed dqkv is compared (norm-wise relative difference per third, printed to stderr) as a sanity check.
//
// Usage: bench_attention_bwd [reps]
//   stdout: "impl,mode,N,dh,ms,tflops" then rows "bfm-bwd-mma,<mode>,<N>,<dh>,<ms>,<tflops>" and
//   "bfm-bwd-wgmma,..." (mode bidir or causal); the wgmma rows are left out where the variant is unavailable.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cuda/attention_sm90_bwd.cuh"
#include "base/error.h"

namespace {

using bfm::kernels::cuda::bf16;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) bfm::fail("bench_attention_bwd: ", what, ": ", cudaGetErrorString(err));
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

std::vector<float> to_host(const bf16* p, size_t n) {
  std::vector<bf16> t(n);
  check(cudaMemcpy(t.data(), p, n * sizeof(bf16), cudaMemcpyDeviceToHost), "cudaMemcpy");
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = __bfloat162float(t[i]);
  return out;
}

void bench_shape(int N, int dh, bool causal, int reps) {
  const int B = 8, H = dh == 64 ? 12 : 6, D = H * dh;
  const int causal_block = causal ? 128 : 0;
  const size_t qkv_n = size_t(B) * N * 3 * D, out_n = size_t(B) * N * D, lse_n = size_t(B) * H * N;
  Device<bf16> qkv(qkv_n), out(out_n), dout(out_n), dqkv(qkv_n);
  Device<float> lse(lse_n);
  fill_uniform<<<1024, 256>>>(qkv.ptr, int64_t(qkv_n), 1, 1.0f);
  fill_uniform<<<1024, 256>>>(dout.ptr, int64_t(out_n), 2, 1.0f);
  check(cudaGetLastError(), "fill_uniform");
  bfm::kernels::cuda::attention_forward<bf16>(out.ptr, lse.ptr, qkv.ptr, B, N, H, dh, causal_block, nullptr);
  check(cudaDeviceSynchronize(), "attention_forward");

  const auto zero_grad = [&] { check(cudaMemsetAsync(dqkv.ptr, 0, qkv_n * sizeof(bf16)), "cudaMemsetAsync"); };
  const auto mma = [&] {
    setenv("BFM_ATTENTION_BWD", "mma", 1);  // the portable kernels, not the dispatcher's Hopper pick
    bfm::kernels::cuda::attention_backward<bf16>(dqkv.ptr, dout.ptr, qkv.ptr, out.ptr, lse.ptr, B, N, H, dh,
                                                 causal_block, nullptr);
    unsetenv("BFM_ATTENTION_BWD");
  };
  const auto wgmma = [&] {
    bfm::kernels::cuda::detail::attention_backward_sm90(dqkv.ptr, dout.ptr, qkv.ptr, out.ptr, lse.ptr, B, N, H, dh,
                                                        causal_block, nullptr);
  };
  const double flops = 2.5 * 4.0 * B * H * double(N) * N * dh * (causal ? 0.5 : 1.0);
  const char* mode = causal ? "causal" : "bidir";

  const float mma_ms = median_ms(reps, zero_grad, mma);
  check(cudaDeviceSynchronize(), "attention_backward (mma)");
  std::printf("bfm-bwd-mma,%s,%d,%d,%.4f,%.1f\n", mode, N, dh, mma_ms, flops / (mma_ms * 1e9));
  std::fflush(stdout);
  if (!bfm::kernels::cuda::detail::attention_backward_sm90_available(dh)) {
    std::fprintf(stderr, "%s N=%d dh=%d: the wgmma backward is unavailable here\n", mode, N, dh);
    return;
  }
  const float wgmma_ms = median_ms(reps, zero_grad, wgmma);
  check(cudaDeviceSynchronize(), "attention_backward (wgmma)");
  std::printf("bfm-bwd-wgmma,%s,%d,%d,%.4f,%.1f\n", mode, N, dh, wgmma_ms, flops / (wgmma_ms * 1e9));
  std::fflush(stdout);

  // Sanity check: one call of each from zero, compared third by third.
  zero_grad();
  mma();
  const std::vector<float> ref = to_host(dqkv.ptr, qkv_n);
  zero_grad();
  wgmma();
  const std::vector<float> got = to_host(dqkv.ptr, qkv_n);
  double num[3] = {0, 0, 0}, den[3] = {0, 0, 0};
  size_t nonfinite = 0;
  for (size_t i = 0; i < qkv_n; ++i) {
    const int third = int(i / D % 3);
    const double d = double(got[i]) - double(ref[i]);
    num[third] += d * d;
    den[third] += double(ref[i]) * double(ref[i]);
    nonfinite += !std::isfinite(got[i]);
  }
  std::fprintf(stderr,
               "%s N=%d dh=%d B=%d H=%d: mma %.3f ms, wgmma %.3f ms (x%.2f); wgmma vs mma rel diff dq %.2e dk %.2e "
               "dv %.2e, non-finite %zu\n",
               mode, N, dh, B, H, mma_ms, wgmma_ms, mma_ms / wgmma_ms, std::sqrt(num[0] / (den[0] + 1e-300)),
               std::sqrt(num[1] / (den[1] + 1e-300)), std::sqrt(num[2] / (den[2] + 1e-300)), nonfinite);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int reps = argc > 1 ? std::atoi(argv[1]) : 20;
    if (reps < 1) bfm::fail("bench_attention_bwd: reps must be at least 1, got '", argv[1], "'");
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    std::fprintf(stderr, "device: %s (sm_%d%d), %d reps; wgmma backward available: dh64 %d, dh128 %d\n", prop.name,
                 prop.major, prop.minor, reps, int(bfm::kernels::cuda::detail::attention_backward_sm90_available(64)),
                 int(bfm::kernels::cuda::detail::attention_backward_sm90_available(128)));
    std::printf("impl,mode,N,dh,ms,tflops\n");
    for (const bool causal : {false, true})
      for (const int dh : {64, 128})
        for (const int N : {1024, 2048, 4096}) bench_shape(N, dh, causal, reps);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
