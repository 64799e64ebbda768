// Which compute devices this process can use. The CPU is always there; CUDA GPUs where the build has CUDA and the
// machine a driver and a GPU. Any CUDA error (no driver: cudaErrorInsufficientDriver) counts as "no GPU".
#pragma once

#include <string>

namespace bfm::runtime {

int cuda_device_count();
std::string cuda_device_name(int device);  // "" when there is none
// The UUID of the GPU this thread uses (cudaGetDevice), 16 bytes: which physical GPU it is, whatever index
// CUDA_VISIBLE_DEVICES gives it. "" when there is none.
std::string cuda_current_device_uuid();
#ifdef BFM_WITH_CUDA
// cudaSetDevice for this host thread; bfm::Error naming the device and CUDA's reason when it fails.
void select_cuda_device(int device);
#endif
// One line: "cpu (2 threads), cuda: none" or "cpu (16 threads), cuda: 1 x NVIDIA H100 80GB HBM3".
std::string describe_devices();

}  // namespace bfm::runtime
