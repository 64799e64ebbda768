// Where a model runs, chosen in ONE place for every command (pre-training, fine-tuning, evaluation features,
// bfm forward): the device, the GPU (by node-local rank) and the precision.
//
//   "cpu"   the CPU back-end (float32)
//   "cuda"  the CUDA back-end, insisted on: an error naming `who` when the build has no CUDA, the machine no GPU, or
//           the configuration cannot run there (the fused attention takes head dims 32, 64 and 128)
//   "auto"  the GPU where the build, the machine and the configuration allow; the CPU otherwise (with a note saying
//           why when there is a GPU that the configuration cannot use)
// A rank on a GPU takes GPU (node-local rank mod the node's GPUs), so that the ranks of a node spread over its GPUs
// whatever their global ranks (runtime::world()); several ranks share a GPU only when there are fewer GPUs than ranks.
#pragma once

#include <string>

#include "model/brain_model.h"
#include "model/config.h"

namespace bfm::model {

struct Placement {
  bool gpu = false;
  int cuda_device = -1;                  // gpu: the device index this process uses
  Precision precision = Precision::fp32;  // gpu: bf16 (mixed precision) or fp32; the CPU is always fp32
  std::string note;                      // why "auto" stayed on the CPU although there is a GPU ("" otherwise)

  static Placement cpu() { return {}; }
  std::string describe() const;  // "the CPU" | "GPU 0 (NVIDIA H200, bf16)"
};

// request: "auto" | "cpu" | "cuda". `who` names the setting in errors and notes, e.g. "runs/a.toml: train.device"
// or "bfm eval --device". Does not touch the device (make_model selects it).
Placement choose_placement(const ModelConfig& config, const std::string& request, Precision precision,
                           const std::string& who);

// Why this configuration cannot run on the CUDA back-end ("" when it can; also "" in a build without CUDA).
std::string cuda_unsupported(const ModelConfig& config);

}  // namespace bfm::model
