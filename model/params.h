// The parameter arena: every tensor of MODEL_SPEC.md "Parameters" in one contiguous float32 buffer, in the spec's
// order and with its names and shapes. Gradients, AdamW moments and (on the GPU) bf16 copies use the same offsets,
// so one all-reduce or one optimizer sweep covers the whole model.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/config.h"

namespace bfm {
class Rng;
}

namespace bfm::model {

enum class ParamInit {
  normal,        // N(0, 0.02)
  residual,      // N(0, 0.02 / sqrt(2 * n_layers)) for the projections that write into the residual stream
  ones,          // LayerNorm weights
  zeros,         // biases, LayerNorm biases
  logit_scale,   // ln(1 / 0.07)
  // MAE's fixed 2-D sin-cos position code, split over the two learnable tables: the parcel table holds the
  // sin-cos code of the parcel index in its first half of channels (zeros after), the time table the code of the
  // patch index in its second half. Attention can then match positions from the first step on.
  sincos_parcel,
  sincos_time,
};

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;  // in floats, into the arena
  int64_t size = 0;    // product of shape (1 for a scalar)
  ParamInit init = ParamInit::normal;
  double init_std = 0.02;
  bool weight_decay = false;  // AdamW decay: linear-layer weight matrices only
};

class ParamLayout {
 public:
  explicit ParamLayout(const ModelConfig& config);

  const std::vector<ParamInfo>& params() const { return params_; }
  int64_t total() const { return total_; }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  // Throws bfm::Error for an unknown name.
  const ParamInfo& at(const std::string& name) const;
  int64_t offset(const std::string& name) const { return at(name).offset; }

  // Fills the arena as in GPT-2/MAE (see ParamInit).
  void initialize(float* arena, Rng& rng) const;

 private:
  void add(std::string name, std::vector<int64_t> shape, ParamInit init, double std = 0.02, bool decay = false);
  // ln1, attn.qkv, attn.proj, ln2, mlp.fc1, mlp.fc2 of one transformer block under `prefix`.
  void add_block(const std::string& prefix, int64_t width, int64_t hidden, int n_layers);

  std::vector<ParamInfo> params_;
  std::unordered_map<std::string, size_t> index_;
  int64_t total_ = 0;
};

}  // namespace bfm::model
