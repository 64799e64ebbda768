// The brain transformer of MODEL_SPEC.md on one GPU: the same forward, losses and backward as model/cpu/cpu_model.h,
// with every op a CUDA kernel of kernels/cuda (attention fused, GEMMs through cuBLASLt), the fused losses computing
// their gradients in the forward pass, and AdamW with global-norm clipping on the device.
//
// Precision: bf16 activations and GEMM operands with fp32 accumulation, fp32 master weights, gradients and moments
// (Precision::bf16), or float32 throughout (Precision::fp32, the mode that checks the GPU against the CPU).
// The parameter arena on the device is the CPU arena's tensors in the same order, each starting on a 256-byte
// boundary (so every GEMM operand is aligned for the fastest kernels); load_params/store_params translate.
//
// A step costs one host synchronisation: reading the losses and the gradient norm.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/brain_model.h"
#include "model/config.h"
#include "model/params.h"
#include "runtime/optimizer.h"

namespace bfm::model {

struct CudaStepResult {
  Losses losses;
  double grad_norm = 0.0;
  bool applied = false;  // false: the loss or the gradient was not finite and the update was skipped
};

class CudaBrainModel final : public BrainModel {
 public:
  // Allocates the arenas on the current CUDA device (make_model selects it); throws bfm::Error when there is no GPU
  // or the configuration is unsupported (model/placement.h: cuda_unsupported).
  CudaBrainModel(const ModelConfig& config, Precision precision, const runtime::AdamWConfig& optimizer = {});
  ~CudaBrainModel() override;

  Precision precision() const;
  std::string device() const override;
  bool on_gpu() const override { return true; }

  void load_params(const float* host_arena) override;
  void store_params(float* host_arena) const override;

  // Forward only: the losses the batch allows. With batch.encoder_only, only the token embeddings, the encoder
  // (with its ln_f) and the mean pool run: no head, no loss (the Losses are empty); backward_tokens can follow.
  Losses forward(const Batch& batch, const std::string& source = "batch") override;
  // Forward, fused losses, backward: grads += scale * d(total)/d(params). on_ready(prefix) is called once the
  // gradient kernels of every tensor under the prefix are enqueued on stream(): a device all-reduce of their bucket
  // may then start on another stream that waits for stream()'s work so far (an event).
  Losses forward_backward(const Batch& batch, float scale = 1.0f, const ReadyHook& on_ready = {},
                          const std::string& source = "batch") override;
  // dLoss/dencoder_out [B, N_enc, D] (float32, host) of a task head, for the last forward (a mae model with
  // batch.mask encodes the visible tokens only, as on the CPU). on_ready is called once with "" (every tensor) after
  // the kernels are enqueued.
  void backward_tokens(const float* d_enc_out, float scale = 1.0f, const ReadyHook& on_ready = {}) override;
  // The encoder-only forward's pooled embedding [B, D] (batch.encoder_only implied).
  std::vector<float> forward_pooled(const Batch& batch, const std::string& source = "batch");

  int encoder_tokens() const override;
  std::vector<float> encoder_out() const override;
  std::vector<float> pooled() const override;
  std::vector<float> reconstruction() const override;
  std::vector<float> next_prediction() const override;

  void zero_grads() override;
  // The device gradient arena (the padded device layout, float32, padding zero), its tensors' padded offsets and
  // the stream that produces it.
  GradientView gradients() override;
  void store_grads(float* host_arena) const override;
  void load_grads(const float* host_arena) override;

  // Contrastive negatives across ranks: the embeddings go through the host (allgather), where the global loss and
  // its gradient are computed by the CPU kernel; this rank's gradient rows go back to the device.
  void set_contrastive_group(int rank, int ranks, Allgather allgather) override;
  // ZeRO-1 on GPU ranks is not written yet: throws bfm::Error saying so.
  void shard_optimizer(runtime::Communicator& comm) override;
  bool optimizer_sharded() const override { return false; }
  // Global-norm clipping and one AdamW step on the device; skipped on the device when the gradient is not finite.
  double optimizer_step(double lr, bool* applied = nullptr) override;
  int64_t steps_taken() const override;
  void set_steps_taken(int64_t steps) override;

  runtime::CheckpointTensors checkpoint_tensors() override;
  void checkpoint_loaded() override;

  // AdamW's moments, in the CPU layout.
  void store_moments(float* m, float* v) const;
  void load_moments(const float* m, const float* v);
  // zero_grads + forward_backward + optimizer_step (benchmarks, tests).
  CudaStepResult train_step(const Batch& batch, double lr);
  // The CUDA stream every op of this model runs on (a cudaStream_t).
  void* stream() const;
  // Device memory held now (parameters, moments, activations), bytes.
  size_t device_bytes() const;
  // Op-by-op timing with CUDA events between the ops (off by default: it adds an event per op). take_profile()
  // returns the milliseconds spent per op name since the last call, summed over the steps run.
  void set_profiling(bool on);
  std::vector<std::pair<std::string, double>> take_profile();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  std::vector<float> host_params_, host_m_, host_v_;  // checkpoint_tensors()' views
};

}  // namespace bfm::model
