// detail::scratch (kernels/cuda/common.cuh): one growing device buffer per (device, stream, slot), for the per-block
// partial sums that the deterministic reductions write and a second kernel reads back.
//
// A buffer only grows. Growing frees the old buffer, which kernels already queued on the same stream may still be
// reading, so it waits for the stream first; this happens a few times at start-up and then never (not inside a CUDA
// graph capture: warm the sizes up before capturing). The buffers live until the process exits.
#include <map>
#include <mutex>
#include <tuple>

#include "kernels/cuda/common.cuh"

namespace bfm::kernels::cuda::detail {
namespace {

struct ScratchBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
};

using ScratchKey = std::tuple<int, cudaStream_t, int>;  // device, stream, slot

std::mutex& scratch_mutex() {
  static std::mutex mutex;
  return mutex;
}

// Never destroyed: freeing device memory after the CUDA runtime has shut down at exit would fail.
std::map<ScratchKey, ScratchBuffer>& scratch_buffers() {
  static auto* buffers = new std::map<ScratchKey, ScratchBuffer>();
  return *buffers;
}

}  // namespace

void* scratch(size_t bytes, cudaStream_t stream, int slot) {
  int device = 0;
  check(cudaGetDevice(&device), "scratch: cudaGetDevice");
  const std::lock_guard<std::mutex> lock(scratch_mutex());
  ScratchBuffer& buffer = scratch_buffers()[ScratchKey{device, stream, slot}];
  if (buffer.ptr != nullptr && buffer.bytes >= bytes) return buffer.ptr;
  const size_t old_bytes = buffer.bytes;
  if (buffer.ptr != nullptr) {
    check(cudaStreamSynchronize(stream), "scratch: waiting for the stream before growing its buffer");
    check(cudaFree(buffer.ptr), "scratch: cudaFree");
    buffer = ScratchBuffer{};
  }
  // Grow by at least half again, so that slowly rising sizes do not reallocate every call.
  size_t grown = old_bytes + old_bytes / 2;
  if (grown < bytes) grown = bytes;
  if (grown < 4096) grown = 4096;
  void* ptr = nullptr;
  const cudaError_t err = cudaMalloc(&ptr, grown);
  if (err != cudaSuccess)
    bfm::fail("scratch: cudaMalloc of ", grown, " bytes (stream slot ", slot, ") failed: ", cudaGetErrorString(err));
  buffer = ScratchBuffer{ptr, grown};
  return ptr;
}

}  // namespace bfm::kernels::cuda::detail
