#include <cuda_runtime.h>

#include "runtime/device.h"
#include "base/error.h"

namespace bfm::runtime {

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  return count;
}

std::string cuda_device_name(int device) {
  cudaDeviceProp prop{};
  if (device < 0 || device >= cuda_device_count() || cudaGetDeviceProperties(&prop, device) != cudaSuccess) return "";
  return prop.name;
}

std::string cuda_current_device_uuid() {
  int device = -1;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&device) != cudaSuccess || cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return "";
  }
  return std::string(prop.uuid.bytes, sizeof prop.uuid.bytes);
}

void select_cuda_device(int device) {
  const cudaError_t e = cudaSetDevice(device);
  require(e == cudaSuccess, "cannot use GPU ", device, ": ", cudaGetErrorString(e));
}

}  // namespace bfm::runtime
