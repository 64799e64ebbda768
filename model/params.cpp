#include "model/params.h"

#include <cmath>

#include "base/error.h"
#include "base/rng.h"

namespace bfm::model {

namespace {
// Each tensor starts on a 16-float (64-byte) boundary so vector loads and the GPU's wide loads stay aligned.
constexpr int64_t kAlign = 16;

}  // namespace

ParamLayout::ParamLayout(const ModelConfig& c) {
  const int64_t D = c.d_model, L = c.patch_len, P = c.n_parcels, nt = c.n_time();
  add("patch_embed.weight", {D, L}, ParamInit::normal, 0.02, true);
  add("patch_embed.bias", {D}, ParamInit::zeros);
  add("parcel_embed", {P, D}, ParamInit::sincos_parcel);
  add("time_embed", {nt, D}, ParamInit::sincos_time);
  for (int i = 0; i < c.n_layers; ++i)
    add_block("blocks." + std::to_string(i) + ".", D, c.mlp_hidden(), c.n_layers);
  add("ln_f.weight", {D}, ParamInit::ones);
  add("ln_f.bias", {D}, ParamInit::zeros);
  if (c.mae) {
    const int64_t Dd = c.decoder->d_model;
    add("decoder.embed.weight", {Dd, D}, ParamInit::normal, 0.02, true);
    add("decoder.embed.bias", {Dd}, ParamInit::zeros);
    add("decoder.mask_token", {Dd}, ParamInit::normal);
    add("decoder.parcel_embed", {P, Dd}, ParamInit::sincos_parcel);
    add("decoder.time_embed", {nt, Dd}, ParamInit::sincos_time);
    for (int i = 0; i < c.decoder->n_layers; ++i)
      add_block("decoder.blocks." + std::to_string(i) + ".", Dd, c.dec_mlp_hidden(), c.decoder->n_layers);
    add("decoder.ln_f.weight", {Dd}, ParamInit::ones);
    add("decoder.ln_f.bias", {Dd}, ParamInit::zeros);
    add("decoder.head.weight", {L, Dd}, ParamInit::normal, 0.02, true);
    add("decoder.head.bias", {L}, ParamInit::zeros);
  }
  if (c.causal) {
    add("next_head.weight", {L, D}, ParamInit::normal, 0.02, true);
    add("next_head.bias", {L}, ParamInit::zeros);
  }
  if (c.contrastive) {
    add("brain_proj.weight", {c.proj_dim, D}, ParamInit::normal, 0.02, true);
    add("stim_proj.weight", {c.proj_dim, c.stim_dim}, ParamInit::normal, 0.02, true);
    add("logit_scale", {}, ParamInit::logit_scale);
  }
}

void ParamLayout::add_block(const std::string& prefix, int64_t width, int64_t hidden, int n_layers) {
  const double residual_std = 0.02 / std::sqrt(2.0 * n_layers);
  add(prefix + "ln1.weight", {width}, ParamInit::ones, 0.0, false);
  add(prefix + "ln1.bias", {width}, ParamInit::zeros, 0.0, false);
  add(prefix + "attn.qkv.weight", {3 * width, width}, ParamInit::normal, 0.02, true);
  add(prefix + "attn.qkv.bias", {3 * width}, ParamInit::zeros, 0.0, false);
  add(prefix + "attn.proj.weight", {width, width}, ParamInit::residual, residual_std, true);
  add(prefix + "attn.proj.bias", {width}, ParamInit::zeros, 0.0, false);
  add(prefix + "ln2.weight", {width}, ParamInit::ones, 0.0, false);
  add(prefix + "ln2.bias", {width}, ParamInit::zeros, 0.0, false);
  add(prefix + "mlp.fc1.weight", {hidden, width}, ParamInit::normal, 0.02, true);
  add(prefix + "mlp.fc1.bias", {hidden}, ParamInit::zeros, 0.0, false);
  add(prefix + "mlp.fc2.weight", {width, hidden}, ParamInit::residual, residual_std, true);
  add(prefix + "mlp.fc2.bias", {width}, ParamInit::zeros, 0.0, false);
}

void ParamLayout::add(std::string name, std::vector<int64_t> shape, ParamInit init, double std, bool decay) {
  ParamInfo info;
  info.size = 1;
  for (int64_t d : shape) info.size *= d;
  info.name = std::move(name);
  info.shape = std::move(shape);
  info.offset = total_;
  info.init = init;
  info.init_std = std;
  info.weight_decay = decay;
  total_ += (info.size + kAlign - 1) / kAlign * kAlign;
  index_.emplace(info.name, params_.size());
  params_.push_back(std::move(info));
}

const ParamInfo& ParamLayout::at(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) fail("model has no parameter named '", name, "'");
  return params_[it->second];
}

void ParamLayout::initialize(float* arena, Rng& rng) const {
  for (int64_t i = 0; i < total_; ++i) arena[i] = 0.0f;  // alignment padding stays zero
  for (const auto& p : params_) {
    float* w = arena + p.offset;
    switch (p.init) {
      case ParamInit::normal:
      case ParamInit::residual:
        for (int64_t i = 0; i < p.size; ++i) w[i] = static_cast<float>(p.init_std * rng.normal());
        break;
      case ParamInit::ones:
        for (int64_t i = 0; i < p.size; ++i) w[i] = 1.0f;
        break;
      case ParamInit::zeros:
        break;
      case ParamInit::sincos_parcel:
      case ParamInit::sincos_time: {
        // Rows are positions, columns channels; a half of the channels holds [sin(pos w_i) | cos(pos w_i)] with
        // w_i = 10000^(-i / (quarter)), as in MAE's get_1d_sincos_pos_embed.
        const int64_t rows = p.shape[0], width = p.shape[1], half = width / 2, quarter = half / 2;
        const int64_t first = p.init == ParamInit::sincos_parcel ? 0 : width - half;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t i = 0; i < quarter; ++i) {
            const double omega = std::pow(10000.0, -double(i) / double(quarter));
            w[r * width + first + i] = static_cast<float>(std::sin(double(r) * omega));
            w[r * width + first + quarter + i] = static_cast<float>(std::cos(double(r) * omega));
          }
        break;
      }
      case ParamInit::logit_scale:
        w[0] = static_cast<float>(std::log(1.0 / 0.07));
        break;
    }
  }
}

}  // namespace bfm::model
