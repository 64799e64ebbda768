// The brain transformer of MODEL_SPEC.md on the CPU: patch tokens -> encoder -> objective heads -> losses, and the
// exact backward pass of their weighted sum into one gradient arena laid out like the parameters.
//
//   mae          encoder over the visible tokens (bidirectional) -> decoder over all N tokens -> masked MSE
//   causal       encoder over all tokens (time-causal) -> next_head -> next-patch MSE
//   contrastive  mean-pooled encoder output and the stimulus embedding -> projections -> symmetric InfoNCE
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "model/brain_model.h"
#include "model/config.h"
#include "model/params.h"
#include "model/cpu/transformer.h"
#include "runtime/optimizer.h"
#include "runtime/zero.h"

namespace bfm::model {

class CpuBrainModel final : public BrainModel {
 public:
  explicit CpuBrainModel(const ModelConfig& config, const runtime::AdamWConfig& optimizer = {});
  ~CpuBrainModel() override;

  std::string device() const override { return "cpu"; }
  bool on_gpu() const override { return false; }

  // The arenas themselves (ParamLayout order): the CPU back-end's own storage.
  float* params() { return params_.data(); }
  const float* params() const { return params_.data(); }
  float* grads() { return grads_.data(); }
  const float* grads() const { return grads_.data(); }
  void load_params(const float* host_arena) override;
  void store_params(float* host_arena) const override;

  Losses forward(const Batch& batch, const std::string& source = "batch") override;
  Losses forward_backward(const Batch& batch, float scale = 1.0f, const ReadyHook& on_ready = {},
                          const std::string& source = "batch") override;
  // grads += scale * d(loss_total)/d(params) for the last forward (which must have had a loss). on_ready as in
  // forward_backward.
  void backward(float scale = 1.0f, const ReadyHook& on_ready = {});
  void backward_tokens(const float* d_enc_out, float scale = 1.0f, const ReadyHook& on_ready = {}) override;

  int batch_size() const { return B_; }
  int encoder_tokens() const override { return n_enc_; }
  std::vector<float> encoder_out() const override { return enc_out_; }
  std::vector<float> pooled() const override { return pooled_; }
  std::vector<float> reconstruction() const override { return recon_; }
  std::vector<float> next_prediction() const override { return next_; }
  // The same outputs without a copy.
  const std::vector<float>& encoder_out_ref() const { return enc_out_; }        // [B, N_enc, D]
  const std::vector<float>& pooled_ref() const { return pooled_; }              // [B, D]
  const std::vector<float>& brain_embedding() const { return brain_e_; }  // [B, E] before normalisation
  const std::vector<float>& stim_embedding() const { return stim_e_; }    // [B, E] before normalisation

  void zero_grads() override;
  GradientView gradients() override;
  void store_grads(float* host_arena) const override;
  void load_grads(const float* host_arena) override;

  void set_contrastive_group(int rank, int ranks, Allgather allgather) override;

  void shard_optimizer(runtime::Communicator& comm) override;
  bool optimizer_sharded() const override { return zero_ != nullptr; }
  double optimizer_step(double lr, bool* applied = nullptr) override;
  int64_t steps_taken() const override;
  void set_steps_taken(int64_t steps) override;
  runtime::CheckpointTensors checkpoint_tensors() override;
  void checkpoint_loaded() override {}

 private:
  std::vector<float> params_, grads_;
  TransformerStack encoder_;
  std::unique_ptr<TransformerStack> decoder_;
  // AdamW over the whole arena, or (ZeRO-1, shard_optimizer) its moments sharded over the ranks.
  std::unique_ptr<runtime::AdamW> adamw_;
  std::unique_ptr<runtime::ShardedAdamW> zero_;
  float grad_scale_ = 1.0f;  // ZeRO: 1 / ranks, applied to the reduce-scattered sums

  // Last forward.
  int B_ = 0, n_enc_ = 0;
  bool ran_decoder_ = false, ran_contrastive_ = false;
  std::vector<float> patches_;        // [B, N, L] targets
  std::vector<uint8_t> mask_;         // [B, N]
  std::vector<int32_t> visible_;      // [B, n_enc] when masked
  std::vector<float> tokens_;         // [B, n_enc, D] encoder input
  std::vector<float> enc_out_, pooled_;
  std::vector<float> dec_z_, dec_in_, dec_out_, recon_, next_;
  std::vector<float> stim_;           // [B, S] copy
  std::vector<float> brain_e_, stim_e_;
  int group_rank_ = 0, group_size_ = 1;
  Allgather allgather_;
  std::vector<float> brain_all_, stim_all_;  // [ranks * B, E] gathered, when group_size_ > 1
  Losses losses_;

  // d_enc_out [B * N_enc, D] -> encoder, token embeddings (the tail of both backward passes).
  void backward_encoder(const float* d_enc_out, const ReadyHook& on_ready);
};

}  // namespace bfm::model
