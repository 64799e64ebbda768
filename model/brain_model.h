// The brain transformer of MODEL_SPEC.md behind ONE interface, whatever the device: what pre-training (the step
// engine), fine-tuning, evaluation features and `bfm forward` use. Two back-ends implement it:
//   model/cpu/cpu_model.h    float32 on the host, the reference (OpenMP, OpenBLAS), every op in kernels/cpu
//   model/cuda/cuda_model.h  one GPU: kernels/cuda, fused attention, cuBLASLt, bf16 or float32, AdamW on the device
// A consumer gets one from make_model(config, placement) and never asks which it has: where it runs (device, GPU by
// node-local rank, precision) is chosen once, by choose_placement (model/placement.h).
//
// What a model does, in the order a training step calls it:
//   forward_backward(batch, scale, on_ready)  losses of the batch and grads += scale * d(total)/d(params); on_ready
//                                             names each group of tensors whose gradient is final (a bucket's
//                                             all-reduce may start while backward goes on)
//   gradients()                               the gradient arena as a view a communicator reduces (host or device)
//   optimizer_step(lr)                        global-norm clipping, AdamW, logit_scale clamped to ln(100)
//   checkpoint_tensors() / checkpoint_loaded  the state a training checkpoint saves and loads (host views)
// and for downstream use: forward (losses and outputs, no gradient), encoder_out / pooled (token and pooled features),
// backward_tokens (a task head's gradient sent back through the encoder: fine-tuning).
//
// Parameters cross the interface in the CPU arena's layout (ParamLayout order, arena_size floats, host memory).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/config.h"
#include "model/params.h"
#include "runtime/optimizer.h"

namespace bfm::runtime {
class Communicator;
struct CheckpointTensors;
}  // namespace bfm::runtime

namespace bfm::model {

struct Batch {
  int size = 0;                    // B
  const float* x = nullptr;        // [B, T, P], host
  const uint8_t* mask = nullptr;   // [B, N], 1 = masked; used by mae models (ignored by the others), may be null
  const float* stim = nullptr;     // [B, S]; needed for the contrastive loss, may be null
  bool encoder_only = false;       // run the encoder and the mean pool only (features, fine-tuning): no heads
};

struct Losses {
  std::optional<double> mae, causal, contrastive;
  std::optional<double> total;  // sum of weight_k * loss_k over the losses the inputs allowed
};

// ("loss", total), ("mae", ...), ... for the losses present: the names progress lines and metrics use.
std::vector<std::pair<std::string, double>> named_losses(const Losses& losses);

// Called with a parameter-name prefix ("decoder.head.", "blocks.11.", "patch_embed.", "logit_scale") once the
// gradients of every tensor under it are final for this backward; every tensor is covered.
using ReadyHook = std::function<void(const std::string& prefix)>;
// all-gather of the contrastive embeddings over data-parallel ranks: (local, global, floats per rank), rank order.
using Allgather = std::function<void(const float* local, float* global, int64_t n_per_rank)>;

enum class Precision { fp32, bf16 };
Precision parse_precision(const std::string& name);  // "fp32" | "bf16"; throws bfm::Error otherwise
const char* to_string(Precision precision);

// The gradient arena where the back-end keeps it: what a communicator all-reduces in place.
struct GradientView {
  float* data = nullptr;
  int64_t size = 0;        // floats, padding included
  bool on_device = false;  // device memory (the CUDA back-end): a device communicator (NCCL) reduces it in place;
                           // a host one needs store_grads / load_grads around it
  std::vector<std::pair<int64_t, int64_t>> tensors;  // {offset, size} in floats of each ParamLayout tensor, in order
  void* stream = nullptr;  // on_device: the CUDA stream whose work produces it (a cudaStream_t)
};

class BrainModel {
 public:
  // logit_scale is clamped to ln(100) after every update (CLIP's rule).
  static constexpr double kMaxLogitScale = 4.605170185988092;

  virtual ~BrainModel() = default;
  BrainModel(const BrainModel&) = delete;
  BrainModel& operator=(const BrainModel&) = delete;

  const ModelConfig& config() const { return config_; }
  const ParamLayout& layout() const { return layout_; }
  int64_t arena_size() const { return layout_.total(); }
  // "cpu", or "cuda:0 (NVIDIA H200, bf16)": for progress lines and errors.
  virtual std::string device() const = 0;
  virtual bool on_gpu() const = 0;

  // ---- parameters, in the CPU arena's layout
  virtual void load_params(const float* host_arena) = 0;
  virtual void store_params(float* host_arena) const = 0;
  std::vector<float> params_copy() const;  // store_params into a new host arena
  // MODEL_SPEC's initialisation, drawn on the host from `seed` (the same numbers on every back-end).
  void initialize(uint64_t seed);

  // ---- passes. `source` names the input in errors (bad mask rows).
  // Losses the batch allows and the outputs below; no gradient.
  virtual Losses forward(const Batch& batch, const std::string& source = "batch") = 0;
  // Forward, then grads += scale * d(total)/d(params). A batch that allows no loss (encoder_only, mae without a
  // mask) leaves the gradients as they are.
  virtual Losses forward_backward(const Batch& batch, float scale = 1.0f, const ReadyHook& on_ready = {},
                                  const std::string& source = "batch") = 0;
  // After an encoder-only forward: grads += scale * the gradient that d_enc_out [B, N_enc, D] (host, dLoss/dencoder_out
  // of a task head outside the model) sends back through the encoder (ln_f included) and the token embeddings. The
  // objective heads' gradients are left as they are; on_ready covers every tensor.
  virtual void backward_tokens(const float* d_enc_out, float scale = 1.0f, const ReadyHook& on_ready = {}) = 0;

  // Outputs of the last forward, host float32.
  virtual int encoder_tokens() const = 0;                     // N_enc
  virtual std::vector<float> encoder_out() const = 0;         // [B, N_enc, D]
  virtual std::vector<float> pooled() const = 0;              // [B, D]
  virtual std::vector<float> reconstruction() const = 0;      // [B, N, L]; empty without decoder and mask
  virtual std::vector<float> next_prediction() const = 0;     // [B, N, L]; empty unless causal

  // ---- gradients
  virtual void zero_grads() = 0;
  virtual GradientView gradients() = 0;
  virtual void store_grads(float* host_arena) const = 0;  // CPU layout
  virtual void load_grads(const float* host_arena) = 0;   // replaces them (after a host all-reduce)

  // The contrastive loss over the micro-batches of `ranks` data-parallel ranks at once (CLIP's negatives from the
  // global batch): forward all-gathers the brain and stimulus embeddings, every rank computes the same loss over all
  // rows, and backward returns, for this rank's rows, the gradient of that loss multiplied by `ranks` (so that the
  // mean over ranks of the summed gradients is the gradient of the global loss); logit_scale's gradient, the same on
  // every rank, is not multiplied. ranks = 1 (the default) is the plain local loss.
  virtual void set_contrastive_group(int rank, int ranks, Allgather allgather) = 0;

  // ---- optimizer: AdamW with global-norm clipping (the config given to make_model)
  // ZeRO-1: AdamW's moments sharded over comm's ranks (runtime/zero.h). optimizer_step then takes this rank's
  // gradients NOT yet reduced over ranks (it reduce-scatters them itself, scaled by 1 / ranks), so the caller skips
  // its all-reduce: optimizer_sharded() says so. A back-end that cannot shard throws bfm::Error.
  virtual void shard_optimizer(runtime::Communicator& comm) = 0;
  virtual bool optimizer_sharded() const = 0;
  // Clipping and one AdamW step at learning rate lr over the gradients, then logit_scale clamped. Returns the
  // global gradient norm before clipping; a non-finite norm skips the update (applied = false).
  virtual double optimizer_step(double lr, bool* applied = nullptr) = 0;
  virtual int64_t steps_taken() const = 0;  // AdamW's bias-correction count
  virtual void set_steps_taken(int64_t steps) = 0;

  // ---- the training checkpoint's tensors: host views of the parameters and AdamW's moments (the shard of them
  // under ZeRO). A device back-end copies its state into host buffers first; after a checkpoint has been read into
  // these views, checkpoint_loaded() takes them back. The views stay valid until the next call.
  virtual runtime::CheckpointTensors checkpoint_tensors() = 0;
  virtual void checkpoint_loaded() = 0;

 protected:
  explicit BrainModel(const ModelConfig& config);
  // The checkpoint's view of host arenas: the layout as a table of named tensors (runtime/ knows no model), the
  // parameters, and the moments (whole, or [shard_begin, shard_end) of the arena under ZeRO).
  runtime::CheckpointTensors checkpoint_view(float* params, float* m, float* v, int64_t shard_begin = -1,
                                             int64_t shard_end = -1) const;
  ModelConfig config_;
  ParamLayout layout_;
};

// The arena's tensors as AdamW's segments (weight decay on the linear layers' weights only).
std::vector<runtime::ArenaSegment> arena_segments(const ParamLayout& layout);

struct Placement;
// A model on the device the placement chose (the CUDA back-end selects its GPU), with AdamW's settings for training;
// its parameters are zero until initialize() or load_params().
std::unique_ptr<BrainModel> make_model(const ModelConfig& config, const Placement& placement,
                                       const runtime::AdamWConfig& optimizer = {});

}  // namespace bfm::model
