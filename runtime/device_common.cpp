#include <omp.h>

#include "runtime/device.h"

namespace bfm::runtime {

#ifndef BFM_WITH_CUDA
int cuda_device_count() { return 0; }
std::string cuda_device_name(int) { return ""; }
std::string cuda_current_device_uuid() { return ""; }
#endif

std::string describe_devices() {
  std::string line = "cpu (" + std::to_string(omp_get_max_threads()) + " threads), cuda: ";
  const int count = cuda_device_count();
  if (count == 0) return line + "none";
  return line + std::to_string(count) + " x " + cuda_device_name(0);
}

}  // namespace bfm::runtime
