// Throughput of bfm's bf16 fused attention (kernels/cuda/attention.cu) on one GPU: forward, and forward + backward,
// for N = 1024, 2048, 4096, dh = 64 and 128, bidirectional and time-causal. Every bf16 forward kernel is timed side
// by side, each followed by the one backward in the fwd+bwd column:
//   bfm-mma       the portable kernel (mma.sync), every GPU
//   bfm-wgmma     the Hopper kernel (wgmma, sm_90a; compute capability 9.0 only), its default key tile (dh 64: 64
//                 keys, two blocks per SM; dh 128: 128 keys)
//   bfm-wgmma128  dh 64 only: the Hopper kernel with 128-key tiles (one block per SM)
// (attention_forward<bf16> itself runs bfm-wgmma where it can, else bfm-mma; kernels/cuda/attention_sm90.cuh.) bench/attention_torch.py times PyTorch's
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
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cuda/attention_sm90.cuh"
#include "base/error.h"

namespace {

using bfm::kernels::cuda::bf16;
namespace variants = bfm::kernels::cuda::attention_detail;
using variants::ForwardVariant;

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

std::vector<float> copy_to_host(const bf16* device, size_t n) {
  std::vector<bf16> raw(n);
  check(cudaMemcpy(raw.data(), device, n * sizeof(bf16), cudaMemcpyDeviceToHost), "cudaMemcpy");
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = __bfloat162float(raw[i]);
  return v;
}

// Norm-wise relative difference of a device bf16 buffer from `reference` (0 when reference is empty).
double relative_difference(const bf16* device, const std::vector<float>& reference, size_t n) {
  if (reference.empty()) return 0.0;
  const std::vector<float> v = copy_to_host(device, n);
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < n; ++i) {
    diff += (double(v[i]) - reference[i]) * (double(v[i]) - reference[i]);
    norm += double(reference[i]) * reference[i];
  }
  return norm > 0.0 ? std::sqrt(diff / norm) : std::sqrt(diff);
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

  struct Impl {
    const char* name;
    ForwardVariant variant;
    int key_tile;
  };
  std::vector<Impl> impls{{"bfm-mma", ForwardVariant::kMma, 0}};
  if (variants::wgmma_forward_available(dh)) {
    impls.push_back({"bfm-wgmma", ForwardVariant::kWgmma, 0});
    if (dh == 64) impls.push_back({"bfm-wgmma128", ForwardVariant::kWgmma, 128});
  }
  std::vector<float> reference_out;  // bfm-mma's out, to check the others against
  for (const Impl& impl : impls) {
    const auto forward = [&] {
      variants::attention_forward_variant(impl.variant, out.ptr, lse.ptr, qkv.ptr, B, N, H, dh, causal_block, nullptr,
                                          impl.key_tile);
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
    // out now holds this forward's result: compare it with the portable kernel's (the first impl).
    const double diff = relative_difference(out.ptr, reference_out, out_n);

    const double fwd_flops = 4.0 * B * H * double(N) * N * dh * (causal ? 0.5 : 1.0);
    const char* mode = causal ? "causal" : "bidir";
    std::printf("%s,%s,%d,%d,%.1f,%.1f\n", impl.name, mode, N, dh, fwd_flops / (fwd_ms * 1e9),
                3.5 * fwd_flops / (step_ms * 1e9));
    std::fflush(stdout);
    std::fprintf(stderr,
                 "%s %s N=%d dh=%d B=%d H=%d causal_block=%d: forward %.3f ms, forward+backward %.3f ms, "
                 "out vs bfm-mma %.2e\n",
                 impl.name, mode, N, dh, B, H, causal_block, fwd_ms, step_ms, diff);
    if (!(diff < 1e-2))
      std::fprintf(stderr, "WARNING: %s's out differs from bfm-mma's by %.2e (expected below 1e-2): its timing "
                   "above is of a wrong kernel\n", impl.name, diff);
    if (&impl == &impls.front()) reference_out = copy_to_host(out.ptr, out_n);
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int reps = argc > 1 ? std::atoi(argv[1]) : 20;
    if (reps < 1) bfm::fail("bench_attention: reps must be at least 1, got '", argv[1], "'");
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    std::fprintf(stderr, "device: %s (sm_%d%d), %d reps; Hopper (wgmma) forward %s\n", prop.name, prop.major,
                 prop.minor, reps, variants::wgmma_forward_available(64) ? "timed" : "not available here");
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
