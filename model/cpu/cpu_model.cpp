#include "model/cpu/cpu_model.h"

#include <algorithm>
#include <cmath>

#include <unistd.h>

#include "kernels/contrastive.h"
#include "kernels/linear.h"
#include "kernels/mask_fill.h"
#include "kernels/mean_pool.h"
#include "kernels/mse_loss.h"
#include "kernels/patch_embed.h"
#include "model/masking.h"
#include "base/error.h"
#include "base/rng.h"
#include "runtime/train_checkpoint.h"

namespace bfm::model {

namespace k = bfm::kernels::cpu;

namespace {
// The arenas a CPU model holds (parameters, gradients, AdamW's two moments) must fit in this machine's memory: a
// config far too large is an error naming its size, not an allocation failure.
int64_t checked_arena(const ParamLayout& layout, const ModelConfig& c) {
  const double bytes = 4.0 * 4.0 * double(layout.total());
  const double memory = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  require(memory <= 0 || bytes < memory, "model config: ", layout.total(), " parameters (d_model ", c.d_model, ", ",
          c.n_layers, " layers, ", c.n_parcels, " parcels) need ", bytes / 1e9, " GB for parameters, gradients and "
          "AdamW's moments, more than this machine's ", memory / 1e9, " GB");
  return layout.total();
}
}  // namespace

CpuBrainModel::CpuBrainModel(const ModelConfig& config, const runtime::AdamWConfig& optimizer)
    : BrainModel(config),
      params_(checked_arena(layout_, config), 0.0f),
      grads_(layout_.total(), 0.0f),
      encoder_(layout_, "", config.n_layers, config.d_model, config.n_heads, config.mlp_hidden(),
               static_cast<float>(config.ln_eps)),
      adamw_(std::make_unique<runtime::AdamW>(layout_.total(), arena_segments(layout_), optimizer)) {
  if (config_.mae)
    decoder_ = std::make_unique<TransformerStack>(layout_, "decoder.", config_.decoder->n_layers,
                                                  config_.decoder->d_model, config_.decoder->n_heads,
                                                  config_.dec_mlp_hidden(), static_cast<float>(config_.ln_eps));
}

CpuBrainModel::~CpuBrainModel() = default;

void CpuBrainModel::set_contrastive_group(int rank, int ranks, Allgather allgather) {
  require(ranks >= 1 && rank >= 0 && rank < ranks && (ranks == 1 || allgather), "set_contrastive_group: rank ", rank,
          " of ", ranks, (ranks > 1 && !allgather ? " without an all-gather" : ""));
  group_rank_ = rank;
  group_size_ = ranks;
  allgather_ = std::move(allgather);
}

void CpuBrainModel::load_params(const float* host) { std::copy_n(host, layout_.total(), params_.data()); }
void CpuBrainModel::store_params(float* host) const { std::copy_n(params_.data(), layout_.total(), host); }
void CpuBrainModel::zero_grads() { std::fill(grads_.begin(), grads_.end(), 0.0f); }
void CpuBrainModel::store_grads(float* host) const { std::copy_n(grads_.data(), layout_.total(), host); }
void CpuBrainModel::load_grads(const float* host) { std::copy_n(host, layout_.total(), grads_.data()); }

GradientView CpuBrainModel::gradients() {
  GradientView g;
  g.data = grads_.data();
  g.size = layout_.total();
  for (const ParamInfo& p : layout_.params()) g.tensors.emplace_back(p.offset, p.size);
  return g;
}

Losses CpuBrainModel::forward_backward(const Batch& batch, float scale, const ReadyHook& on_ready,
                                       const std::string& source) {
  const Losses l = forward(batch, source);
  if (l.total) backward(scale, on_ready);
  return l;
}

void CpuBrainModel::shard_optimizer(runtime::Communicator& comm) {
  zero_ = std::make_unique<runtime::ShardedAdamW>(layout_.total(), arena_segments(layout_), adamw_->config(), comm);
  zero_->set_steps_taken(adamw_->steps_taken());
  grad_scale_ = 1.0f / float(comm.size());
  adamw_.reset();
}

double CpuBrainModel::optimizer_step(double lr, bool* applied) {
  double norm = 0;
  if (zero_) {
    // ZeRO-1: reduce-scatter of the gradient sums, clipping on the global norm, AdamW on this rank's shard,
    // all-gather of the parameters (runtime/zero.h); a non-finite norm skips the update on every rank.
    norm = zero_->step(params_.data(), grads_.data(), grad_scale_, lr);
  } else {
    norm = adamw_->grad_norm(grads_.data());
    if (std::isfinite(norm)) adamw_->step(params_.data(), grads_.data(), lr);
  }
  const bool ok = std::isfinite(norm);
  if (ok && config_.contrastive) {
    float& logit_scale = params_[size_t(layout_.offset("logit_scale"))];
    if (logit_scale > float(kMaxLogitScale)) logit_scale = float(kMaxLogitScale);
  }
  if (applied) *applied = ok;
  return norm;
}

int64_t CpuBrainModel::steps_taken() const { return zero_ ? zero_->steps_taken() : adamw_->steps_taken(); }
void CpuBrainModel::set_steps_taken(int64_t steps) {
  if (zero_) zero_->set_steps_taken(steps);
  else adamw_->set_steps_taken(steps);
}

runtime::CheckpointTensors CpuBrainModel::checkpoint_tensors() {
  if (zero_)
    return checkpoint_view(params_.data(), zero_->first_moment().data(), zero_->second_moment().data(),
                           zero_->shard_begin(), zero_->shard_end());
  return checkpoint_view(params_.data(), adamw_->first_moment().data(), adamw_->second_moment().data());
}

Losses CpuBrainModel::forward(const Batch& batch, const std::string& source) {
  const ModelConfig& c = config_;
  const int B = batch.size, T = c.window, P = c.n_parcels, L = c.patch_len, D = c.d_model, N = c.n_tokens();
  require(B > 0 && batch.x != nullptr, source, ": empty batch");
  B_ = B;
  const float* p = params_.data();
  auto at = [&](const char* name) { return p + layout_.offset(name); };

  patches_.resize(int64_t(B) * N * L);
  k::patchify(patches_.data(), batch.x, B, T, P, L);

  // The mae encoder sees only the visible tokens; every other configuration sees all N.
  const bool masked = c.mae && batch.mask != nullptr;
  const int32_t* token_index = nullptr;
  if (masked) {
    mask_.assign(batch.mask, batch.mask + int64_t(B) * N);
    visible_ = visible_indices(mask_.data(), B, N, &n_enc_, source);
    token_index = visible_.data();
  } else {
    mask_.clear();
    visible_.clear();
    n_enc_ = N;
  }
  const int64_t M = int64_t(B) * n_enc_;
  tokens_.resize(M * D);
  k::patch_embed_forward(tokens_.data(), patches_.data(), at("patch_embed.weight"), at("patch_embed.bias"),
                         at("parcel_embed"), at("time_embed"), token_index, B, N, n_enc_, P, L, D);
  enc_out_.resize(M * D);
  encoder_.forward(enc_out_.data(), tokens_.data(), p, B, n_enc_, c.causal ? P : 0);
  pooled_.resize(int64_t(B) * D);
  k::mean_pool_forward(pooled_.data(), enc_out_.data(), B, n_enc_, D);

  losses_ = Losses{};
  double total = 0.0;
  bool any = false;

  ran_decoder_ = masked && !batch.encoder_only;
  ran_contrastive_ = c.contrastive && batch.stim != nullptr && !batch.encoder_only;
  recon_.clear();
  next_.clear();
  brain_e_.clear();
  stim_e_.clear();
  if (batch.encoder_only) return losses_;

  if (masked) {
    const int Dd = c.decoder->d_model;
    dec_z_.resize(M * Dd);
    k::linear_forward(dec_z_.data(), enc_out_.data(), at("decoder.embed.weight"), at("decoder.embed.bias"), M, D, Dd);
    dec_in_.resize(int64_t(B) * N * Dd);
    k::mask_fill_forward(dec_in_.data(), dec_z_.data(), at("decoder.mask_token"), at("decoder.parcel_embed"),
                         at("decoder.time_embed"), visible_.data(), B, N, n_enc_, P, Dd);
    dec_out_.resize(int64_t(B) * N * Dd);
    decoder_->forward(dec_out_.data(), dec_in_.data(), p, B, N, 0);
    recon_.resize(int64_t(B) * N * L);
    k::linear_forward(recon_.data(), dec_out_.data(), at("decoder.head.weight"), at("decoder.head.bias"),
                      int64_t(B) * N, Dd, L);
    losses_.mae = k::masked_mse_forward(recon_.data(), patches_.data(), mask_.data(), B, N, L);
    total += c.weight_mae * *losses_.mae;
    any = true;
  }

  if (c.causal) {
    next_.resize(int64_t(B) * N * L);
    k::linear_forward(next_.data(), enc_out_.data(), at("next_head.weight"), at("next_head.bias"), int64_t(B) * N, D, L);
    losses_.causal = k::next_patch_mse_forward(next_.data(), patches_.data(), B, c.n_time(), P, L);
    total += c.weight_causal * *losses_.causal;
    any = true;
  }

  if (ran_contrastive_) {
    const int S = c.stim_dim, E = c.proj_dim;
    stim_.assign(batch.stim, batch.stim + int64_t(B) * S);
    brain_e_.resize(int64_t(B) * E);
    stim_e_.resize(int64_t(B) * E);
    k::linear_forward(brain_e_.data(), pooled_.data(), at("brain_proj.weight"), nullptr, B, D, E);
    k::linear_forward(stim_e_.data(), stim_.data(), at("stim_proj.weight"), nullptr, B, S, E);
    const float* be = brain_e_.data();
    const float* se = stim_e_.data();
    int rows = B;
    if (group_size_ > 1) {  // the global batch's embeddings, rank order
      rows = B * group_size_;
      brain_all_.resize(int64_t(rows) * E);
      stim_all_.resize(int64_t(rows) * E);
      allgather_(brain_e_.data(), brain_all_.data(), int64_t(B) * E);
      allgather_(stim_e_.data(), stim_all_.data(), int64_t(B) * E);
      be = brain_all_.data();
      se = stim_all_.data();
    }
    losses_.contrastive = k::contrastive_forward(be, se, *at("logit_scale"),
                                                 static_cast<float>(kMaxLogitScale), rows, E);
    total += c.weight_contrastive * *losses_.contrastive;
    any = true;
  }
  if (any) losses_.total = total;
  return losses_;
}

void CpuBrainModel::backward(float scale, const ReadyHook& on_ready) {
  auto ready = [&](const char* prefix) {
    if (on_ready) on_ready(prefix);
  };
  const ModelConfig& c = config_;
  require(B_ > 0, "CpuBrainModel::backward called before forward");
  require(losses_.total.has_value(), "CpuBrainModel::backward: the last forward computed no loss");
  const int B = B_, P = c.n_parcels, L = c.patch_len, D = c.d_model, N = c.n_tokens();
  const int64_t M = int64_t(B) * n_enc_;
  const float* p = params_.data();
  float* g = grads_.data();
  auto at = [&](const char* name) { return p + layout_.offset(name); };
  auto grad = [&](const char* name) { return g + layout_.offset(name); };

  std::vector<float> d_enc_out(M * D, 0.0f);

  if (ran_decoder_) {
    const int Dd = c.decoder->d_model;
    std::vector<float> d_recon(int64_t(B) * N * L, 0.0f);
    k::masked_mse_backward(d_recon.data(), recon_.data(), patches_.data(), mask_.data(), B, N, L,
                           static_cast<float>(scale * c.weight_mae));
    std::vector<float> d_dec_out(int64_t(B) * N * Dd, 0.0f);
    k::linear_backward(d_dec_out.data(), grad("decoder.head.weight"), grad("decoder.head.bias"), d_recon.data(),
                       dec_out_.data(), at("decoder.head.weight"), int64_t(B) * N, Dd, L);
    ready("decoder.head.");
    std::vector<float> d_dec_in(int64_t(B) * N * Dd, 0.0f);
    decoder_->backward(d_dec_in.data(), d_dec_out.data(), p, g, on_ready);
    std::vector<float> d_z(M * Dd, 0.0f);
    k::mask_fill_backward(d_z.data(), grad("decoder.mask_token"), grad("decoder.parcel_embed"),
                          grad("decoder.time_embed"), d_dec_in.data(), visible_.data(), B, N, n_enc_, P, Dd);
    k::linear_backward(d_enc_out.data(), grad("decoder.embed.weight"), grad("decoder.embed.bias"), d_z.data(),
                       enc_out_.data(), at("decoder.embed.weight"), M, D, Dd);
  }
  if (c.mae) ready("decoder.");  // embed, mask_token, its position tables (and all of it when no mask ran)

  if (c.causal) {
    std::vector<float> d_next(int64_t(B) * N * L, 0.0f);
    k::next_patch_mse_backward(d_next.data(), next_.data(), patches_.data(), B, c.n_time(), P, L,
                               static_cast<float>(scale * c.weight_causal));
    k::linear_backward(d_enc_out.data(), grad("next_head.weight"), grad("next_head.bias"), d_next.data(),
                       enc_out_.data(), at("next_head.weight"), int64_t(B) * N, D, L);
    ready("next_head.");
  }

  if (ran_contrastive_) {
    const int S = c.stim_dim, E = c.proj_dim;
    std::vector<float> d_brain(int64_t(B) * E, 0.0f), d_stim(int64_t(B) * E, 0.0f), d_pooled(int64_t(B) * D, 0.0f);
    const float dloss = static_cast<float>(scale * c.weight_contrastive);
    if (group_size_ == 1) {
      k::contrastive_backward(d_brain.data(), d_stim.data(), grad("logit_scale"), brain_e_.data(), stim_e_.data(),
                              *at("logit_scale"), static_cast<float>(kMaxLogitScale), B, E, dloss);
    } else {
      // The global loss's gradient for every gathered row (the same on every rank), of which this rank keeps its
      // own rows, times the group size (the trainer averages summed gradients over ranks); logit_scale's once.
      const int rows = B * group_size_;
      std::vector<float> d_brain_all(int64_t(rows) * E, 0.0f), d_stim_all(int64_t(rows) * E, 0.0f);
      float d_scale = 0.0f;
      k::contrastive_backward(d_brain_all.data(), d_stim_all.data(), &d_scale, brain_all_.data(), stim_all_.data(),
                              *at("logit_scale"), static_cast<float>(kMaxLogitScale), rows, E, dloss);
      *grad("logit_scale") += d_scale;
      const int64_t first = int64_t(group_rank_) * B * E;
      for (int64_t i = 0; i < int64_t(B) * E; ++i) {
        d_brain[i] = d_brain_all[first + i] * float(group_size_);
        d_stim[i] = d_stim_all[first + i] * float(group_size_);
      }
    }
    k::linear_backward(d_pooled.data(), grad("brain_proj.weight"), nullptr, d_brain.data(), pooled_.data(),
                       at("brain_proj.weight"), B, D, E);
    k::linear_backward(nullptr, grad("stim_proj.weight"), nullptr, d_stim.data(), stim_.data(),
                       at("stim_proj.weight"), B, S, E);
    k::mean_pool_backward(d_enc_out.data(), d_pooled.data(), B, n_enc_, D);
  }
  if (c.contrastive) {
    ready("brain_proj.");
    ready("stim_proj.");
    ready("logit_scale");
  }

  backward_encoder(d_enc_out.data(), on_ready);
}

void CpuBrainModel::backward_tokens(const float* d_enc_out, float scale, const ReadyHook& on_ready) {
  const ModelConfig& c = config_;
  require(B_ > 0, "CpuBrainModel::backward_tokens called before forward");
  require(d_enc_out != nullptr, "CpuBrainModel::backward_tokens: no gradient given");
  // The heads take no part: their gradients are final as they are.
  if (on_ready) {
    if (c.mae) {
      on_ready("decoder.head.");
      on_ready("decoder.ln_f.");
      for (int i = c.decoder->n_layers - 1; i >= 0; --i) on_ready("decoder.blocks." + std::to_string(i) + ".");
      on_ready("decoder.");
    }
    if (c.causal) on_ready("next_head.");
    if (c.contrastive) {
      on_ready("brain_proj.");
      on_ready("stim_proj.");
      on_ready("logit_scale");
    }
  }
  std::vector<float> scaled(d_enc_out, d_enc_out + int64_t(B_) * n_enc_ * c.d_model);
  if (scale != 1.0f)
    for (float& v : scaled) v *= scale;
  backward_encoder(scaled.data(), on_ready);
}

void CpuBrainModel::backward_encoder(const float* d_enc_out, const ReadyHook& on_ready) {
  auto ready = [&](const char* prefix) {
    if (on_ready) on_ready(prefix);
  };
  const ModelConfig& c = config_;
  const int B = B_, P = c.n_parcels, L = c.patch_len, D = c.d_model, N = c.n_tokens();
  const int64_t M = int64_t(B) * n_enc_;
  const float* p = params_.data();
  float* g = grads_.data();
  auto grad = [&](const char* name) { return g + layout_.offset(name); };
  std::vector<float> d_tokens(M * D, 0.0f);
  encoder_.backward(d_tokens.data(), d_enc_out, p, g, on_ready);
  k::patch_embed_backward(grad("patch_embed.weight"), grad("patch_embed.bias"), grad("parcel_embed"),
                          grad("time_embed"), d_tokens.data(), patches_.data(),
                          visible_.empty() ? nullptr : visible_.data(), B, N, n_enc_, P, L, D);
  ready("patch_embed.");
  ready("parcel_embed");
  ready("time_embed");
}

}  // namespace bfm::model
