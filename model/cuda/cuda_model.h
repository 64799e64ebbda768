// The brain transformer of MODEL_SPEC.md on one GPU: the same forward, losses and backward as model/cpu/cpu_model.h,
// with every op a CUDA kernel of kernels/cuda (attention fused, GEMMs through cuBLASLt), the fused losses computing
// their gradients in the forward pass, and AdamW with global-norm clipping on the device.
//
// Precision: bf16 activations and GEMM operands with fp32 accumulation, fp32 master weights, gradients and moments
// (GpuPrecision::bf16), or float32 throughout (GpuPrecision::fp32, the mode that checks the GPU against the CPU).
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

#include "model/cpu/cpu_model.h"
#include "model/config.h"
#include "model/params.h"
#include "runtime/optimizer.h"

namespace bfm::model {

enum class GpuPrecision { bf16, fp32 };
GpuPrecision parse_gpu_precision(const std::string& name);  // "bf16" | "fp32"; throws bfm::Error otherwise
const char* to_string(GpuPrecision precision);

struct GpuStepResult {
  Losses losses;
  double grad_norm = 0.0;
  bool applied = false;  // false: the loss or the gradient was not finite and the update was skipped
};

class GpuBrainModel {
 public:
  // Why this configuration cannot run on the GPU ("" when it can): the fused attention takes head dims 32, 64 and
  // 128 only.
  static std::string unsupported(const ModelConfig& config);

  // Allocates the arenas on the current CUDA device; throws bfm::Error when there is no GPU or the configuration
  // is unsupported.
  GpuBrainModel(const ModelConfig& config, GpuPrecision precision, const runtime::AdamWConfig& optimizer = {});
  ~GpuBrainModel();
  GpuBrainModel(const GpuBrainModel&) = delete;
  GpuBrainModel& operator=(const GpuBrainModel&) = delete;

  const ModelConfig& config() const;
  const ParamLayout& layout() const;
  GpuPrecision precision() const;

  // The CPU arena (ParamLayout order, arena_size floats) <-> the device's fp32 master copy (and its bf16 mirror).
  void load_params(const float* host_arena);
  void store_params(float* host_arena) const;
  void store_grads(float* host_arena) const;  // the gradient arena, in the CPU layout
  void load_grads(const float* host_arena);   // replaces it (e.g. after a host all-reduce over ranks)
  // AdamW's moments and step count (training checkpoints), in the CPU layout.
  void store_moments(float* m, float* v) const;
  void load_moments(const float* m, const float* v);
  void set_steps_taken(int64_t steps);
  void zero_grads();

  // Forward only (evaluation): the losses the batch allows. Host pointers, as BrainModel::forward. With
  // batch.encoder_only, only the token embeddings, the encoder (with its ln_f) and the mean pool run: no head, no
  // loss (the Losses are empty); backward_pooled can follow.
  Losses forward(const Batch& batch, const std::string& source = "batch");
  // Forward, fused losses, backward: grads += scale * d(total)/d(params). Host pointers. With batch.encoder_only
  // there is no loss and so nothing to back-propagate: the same as forward (the gradients are left as they are).
  Losses forward_backward(const Batch& batch, float scale = 1.0f, const std::string& source = "batch");
  // The same, calling on_ready(prefix) as BrainModel::backward does ("decoder.head.", "blocks.11.", "patch_embed.",
  // ...) once the gradient kernels of every tensor under the prefix are enqueued on stream(): a device all-reduce of
  // their bucket may then start on another stream that waits for stream()'s work so far (an event).
  Losses forward_backward(const Batch& batch, float scale, const std::function<void(const std::string&)>& on_ready,
                          const std::string& source = "batch");
  // The CUDA stream every op of this model runs on (a cudaStream_t).
  void* stream() const;
  // {offset, size} in floats of every tensor in the device gradient arena (device_grads()), in ParamLayout order.
  std::vector<std::pair<int64_t, int64_t>> device_tensors() const;

  // Fine-tuning, as BrainModel's encoder_only forward and backward_pooled: forward_pooled runs the encoder-only
  // forward (batch.encoder_only is implied; a mae model with batch.mask encodes the visible tokens only, as on the
  // CPU) and returns the pooled embedding [B, D] as float32. backward_pooled(d_pooled) takes dLoss/dpooled [B, D]
  // (float32, host) of a task head outside the model, for the last forward, and adds scale * its gradient through
  // the mean pool, the encoder and the token embeddings into the gradient arena; the objective heads' gradients are
  // left as they are. optimizer_step then applies AdamW as in pre-training.
  std::vector<float> forward_pooled(const Batch& batch, const std::string& source = "batch");
  void backward_pooled(const float* d_pooled_host, float scale = 1.0f);

  // Global-norm clipping and one AdamW step over the arena at learning rate lr (steps count from 1 internally);
  // skipped on the device when the gradient is not finite. Clamps logit_scale to ln(100) as the CPU trainer does.
  double optimizer_step(double lr, bool* applied = nullptr);
  // zero_grads + forward_backward + optimizer_step, as the trainer calls it.
  GpuStepResult train_step(const Batch& batch, double lr);

  int64_t steps_taken() const;
  // The outputs of the last forward, copied to the host as float32: [B, N_enc, D] and [B, D].
  std::vector<float> encoder_out() const;
  std::vector<float> pooled() const;
  std::vector<float> reconstruction() const;   // [B, N, L]; empty unless the last forward ran the decoder
  std::vector<float> next_prediction() const;  // [B, N, L]; empty unless causal
  int encoder_tokens() const;

  // The gradient arena on the device (the padded device layout, float32, padding zero) and its length in floats: what
  // a device communicator (NCCL) all-reduces in place between forward_backward and optimizer_step.
  float* device_grads();
  int64_t device_arena_size() const;

  // Device memory held now (parameters, moments, activations), bytes.
  size_t device_bytes() const;

  // Op-by-op timing with CUDA events between the ops (off by default: it adds an event per op). take_profile()
  // returns the milliseconds spent per op name since the last call, summed over the steps run.
  void set_profiling(bool on);
  std::vector<std::pair<std::string, double>> take_profile();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace bfm::model
