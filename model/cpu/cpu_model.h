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

#include "model/config.h"
#include "model/params.h"
#include "model/cpu/transformer.h"

namespace bfm::model {

struct Batch {
  int size = 0;                    // B
  const float* x = nullptr;        // [B, T, P]
  const uint8_t* mask = nullptr;   // [B, N], 1 = masked; used by mae models (ignored by the others), may be null
  const float* stim = nullptr;     // [B, S]; needed for the contrastive loss, may be null
  bool encoder_only = false;       // run the encoder and the mean pool only (embeddings, fine-tuning): no heads
};

struct Losses {
  std::optional<double> mae, causal, contrastive;
  std::optional<double> total;  // sum of weight_k * loss_k over the losses the inputs allowed
};

class BrainModel {
 public:
  explicit BrainModel(const ModelConfig& config);

  const ModelConfig& config() const { return config_; }
  const ParamLayout& layout() const { return layout_; }
  float* params() { return params_.data(); }
  const float* params() const { return params_.data(); }
  float* grads() { return grads_.data(); }
  const float* grads() const { return grads_.data(); }
  int64_t arena_size() const { return layout_.total(); }

  void initialize(uint64_t seed);
  void zero_grads();

  // The contrastive loss over the micro-batches of `ranks` data-parallel ranks at once (CLIP's negatives from the
  // global batch): forward all-gathers the brain and stimulus embeddings (allgather(local, global, n_per_rank), rank
  // order), every rank computes the same loss over all rows, and backward returns, for this rank's rows, the
  // gradient of that loss multiplied by `ranks` (so that the trainer's mean over ranks of the summed gradients is
  // the gradient of the global loss); logit_scale's gradient, the same on every rank, is not multiplied. ranks = 1
  // (the default) is the plain local loss.
  void set_contrastive_group(int rank, int ranks, std::function<void(const float*, float*, int64_t)> allgather);

  // Runs the model on a batch and keeps what backward needs. `source` names the input in errors (bad mask rows).
  Losses forward(const Batch& batch, const std::string& source = "batch");
  // grads += scale * d(loss_total)/d(params) for the last forward. on_ready (may be empty) is called with a name
  // prefix ("decoder.head.", "blocks.11.", "patch_embed.", "logit_scale") as soon as the gradients of every
  // tensor under it are final for this call (the all-reduce of their bucket can start); every tensor is covered.
  void backward(float scale = 1.0f, const std::function<void(const std::string&)>& on_ready = {});
  // Fine-tuning: grads += scale * the gradient that d_pooled [B, D] (dLoss/dpooled of a task head outside the model,
  // for the last forward) sends back through the mean pool, the encoder and the token embeddings. The objective
  // heads' gradients are left as they are; on_ready covers every tensor, as in backward().
  void backward_pooled(const float* d_pooled, float scale = 1.0f,
                       const std::function<void(const std::string&)>& on_ready = {});

  // Outputs of the last forward.
  int batch_size() const { return B_; }
  int encoder_tokens() const { return n_enc_; }                          // N_enc
  const std::vector<float>& encoder_out() const { return enc_out_; }     // [B, N_enc, D]
  const std::vector<float>& pooled() const { return pooled_; }           // [B, D]
  const std::vector<float>& reconstruction() const { return recon_; }    // [B, N, L], empty without decoder+mask
  const std::vector<float>& next_prediction() const { return next_; }   // [B, N, L], empty unless causal
  const std::vector<float>& brain_embedding() const { return brain_e_; }  // [B, E] before normalisation
  const std::vector<float>& stim_embedding() const { return stim_e_; }    // [B, E] before normalisation

  static constexpr double kMaxLogitScale = 4.605170185988092;  // ln(100)

 private:
  ModelConfig config_;
  ParamLayout layout_;
  std::vector<float> params_, grads_;
  TransformerStack encoder_;
  std::unique_ptr<TransformerStack> decoder_;

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
  std::function<void(const float*, float*, int64_t)> allgather_;
  std::vector<float> brain_all_, stim_all_;  // [ranks * B, E] gathered, when group_size_ > 1
  Losses losses_;

  // d_enc_out [B * N_enc, D] -> encoder, token embeddings (the tail of both backward passes).
  void backward_encoder(const float* d_enc_out, const std::function<void(const std::string&)>& on_ready);
};

}  // namespace bfm::model
