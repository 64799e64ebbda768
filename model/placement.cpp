#include "model/placement.h"

#include "base/error.h"
#include "runtime/device.h"
#include "runtime/world.h"

namespace bfm::model {

std::string cuda_unsupported(const ModelConfig& c) {
  auto ok = [](int dh) { return dh == 32 || dh == 64 || dh == 128; };
  if (c.n_heads > 0 && !ok(c.head_dim()))
    return "encoder head dim " + std::to_string(c.head_dim()) + " (d_model " + std::to_string(c.d_model) + " / " +
           std::to_string(c.n_heads) + " heads): the GPU attention takes head dims 32, 64 and 128";
  if (c.mae && c.decoder && c.decoder->n_heads > 0 && !ok(c.decoder->d_model / c.decoder->n_heads))
    return "decoder head dim " + std::to_string(c.decoder->d_model / c.decoder->n_heads) +
           ": the GPU attention takes head dims 32, 64 and 128";
  return "";
}

std::string Placement::describe() const {
  if (!gpu) return "the CPU";
  const std::string name = runtime::cuda_device_name(cuda_device);
  return "GPU " + std::to_string(cuda_device) + " (" + (name.empty() ? "?" : name) + ", " + to_string(precision) +
         ")";
}

Placement choose_placement(const ModelConfig& config, const std::string& request, Precision precision,
                           const std::string& who) {
  require(request == "auto" || request == "cpu" || request == "cuda", who, " is '", request,
          "', expected auto, cpu or cuda");
  Placement p;
  if (request == "cpu") return p;
#ifndef BFM_WITH_CUDA
  require(request != "cuda", who, " = \"cuda\" but this bfm was built without CUDA (BFM_WITH_CUDA=OFF)");
  (void)config, (void)precision;
  return p;
#else
  const int devices = runtime::cuda_device_count();
  require(devices > 0 || request != "cuda", who, " = \"cuda\" but this machine has no CUDA GPU (",
          runtime::describe_devices(), ")");
  if (devices == 0) return p;
  const std::string gap = cuda_unsupported(config);
  if (!gap.empty()) {
    require(request != "cuda", who, " = \"cuda\" but the model cannot run on the GPU: ", gap);
    p.note = who + " = \"auto\": on the CPU although there is a GPU: " + gap;
    return p;
  }
  // The node-local rank picks the GPU. A command that never started MPI (bfm forward) is a world of one.
  const int local_rank = runtime::world_started() ? runtime::world().local_rank : 0;
  p.gpu = true;
  p.cuda_device = local_rank % devices;
  p.precision = precision;
  return p;
#endif
}

}  // namespace bfm::model
