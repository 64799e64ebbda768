#include "model/brain_model.h"

#include "base/error.h"
#include "base/rng.h"
#include "model/cpu/cpu_model.h"
#include "model/placement.h"
#include "runtime/train_checkpoint.h"
#ifdef BFM_WITH_CUDA  // the one place that knows both back-ends
#include "model/cuda/cuda_model.h"
#include "runtime/device.h"
#endif

namespace bfm::model {

std::vector<std::pair<std::string, double>> named_losses(const Losses& l) {
  std::vector<std::pair<std::string, double>> out;
  if (l.total) out.emplace_back("loss", *l.total);
  if (l.mae) out.emplace_back("mae", *l.mae);
  if (l.causal) out.emplace_back("causal", *l.causal);
  if (l.contrastive) out.emplace_back("contrastive", *l.contrastive);
  return out;
}

Precision parse_precision(const std::string& name) {
  if (name == "bf16") return Precision::bf16;
  if (name == "fp32") return Precision::fp32;
  fail("unknown precision '", name, "' (bf16 or fp32)");
}
const char* to_string(Precision p) { return p == Precision::bf16 ? "bf16" : "fp32"; }

std::vector<runtime::ArenaSegment> arena_segments(const ParamLayout& layout) {
  std::vector<runtime::ArenaSegment> segments;
  for (const ParamInfo& p : layout.params()) segments.push_back({p.offset, p.size, p.weight_decay});
  return segments;
}

BrainModel::BrainModel(const ModelConfig& config) : config_(config), layout_((config.validate("model config"), config)) {}

std::vector<float> BrainModel::params_copy() const {
  std::vector<float> arena(static_cast<size_t>(arena_size()));
  store_params(arena.data());
  return arena;
}

void BrainModel::initialize(uint64_t seed) {
  std::vector<float> arena(static_cast<size_t>(arena_size()), 0.0f);
  Rng rng(seed);
  layout_.initialize(arena.data(), rng);
  load_params(arena.data());
}

runtime::CheckpointTensors BrainModel::checkpoint_view(float* params, float* m, float* v, int64_t shard_begin,
                                                      int64_t shard_end) const {
  runtime::CheckpointTensors t;
  for (const ParamInfo& p : layout_.params()) t.tensors.push_back({p.name, p.shape, p.offset, p.size});
  t.arena_size = layout_.total();
  t.params = params;
  t.m = m;
  t.v = v;
  t.shard_begin = shard_begin;
  t.shard_end = shard_end;
  return t;
}

std::unique_ptr<BrainModel> make_model(const ModelConfig& config, const Placement& placement,
                                       const runtime::AdamWConfig& optimizer) {
  if (!placement.gpu) return std::make_unique<CpuBrainModel>(config, optimizer);
#ifdef BFM_WITH_CUDA
  runtime::select_cuda_device(placement.cuda_device);
  return std::make_unique<CudaBrainModel>(config, placement.precision, optimizer);
#else
  fail("a GPU placement in a build without CUDA");
#endif
}

}  // namespace bfm::model
