// One optimizer step of data-parallel training, whatever the model's back-end and whatever the loss: pre-training
// (the objectives' losses inside the model) and fine-tuning (a task head's loss outside it) both run on it.
//
//   step(micro_batches, forward_backward, lr):
//     zero the gradients
//     for each micro-batch: forward and backward (the caller's function: it runs the model and its loss); the last
//       micro-batch's backward reports each group of tensors as final, and their bucket's all-reduce starts while
//       backward goes on (CPU ranks; GPU ranks with NCCL and train.gpu_overlap)
//     reduce the gradients over ranks (in buckets, or one all-reduce of the device arena, or through the host)
//     skip the update on every rank when any rank's loss was not finite
//     clip and AdamW (the model's optimizer; ZeRO-1 reduce-scatters itself), a task head's AdamW beside it
//     the losses' means (or sums) over micro-batches and ranks
//
// Reduction: `mean` averages the gradients of the ranks' micro-batches (each micro-batch loss is a mean over its
// rows: pre-training); `sum` adds them (each rank's loss is already divided by the global batch: fine-tuning). The
// losses reported follow the same rule.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/brain_model.h"
#include "runtime/comm.h"
#include "runtime/grad_buckets.h"
#include "runtime/optimizer.h"

namespace bfm::launch {

// A small module trained beside the model on the host (a task head): its parameters, their gradients and its own
// AdamW. The engine zeroes, reduces and steps it with the model.
struct HostModule {
  float* params = nullptr;
  float* grads = nullptr;
  int64_t size = 0;
  runtime::AdamW* optimizer = nullptr;
};

struct StepOptions {
  enum class Reduction { mean, sum } reduction = Reduction::mean;
  double bucket_mb = 25;  // gradient all-reduce bucket size
  // GPU ranks: "auto" (NCCL where built) | "mpi" (through the host) | "nccl"; the gradients of a GPU model are summed
  // by a device communicator when there are several ranks or "nccl" is asked for.
  std::string gpu_comm = "auto";
  // GPU ranks with NCCL: each bucket's all-reduce starts on the communicator's stream while backward still runs
  // (ordered by events); off: one all-reduce of the device arena after backward.
  bool gpu_overlap = false;
  // The device communicator's collective timeout (the host communicator's is its owner's to set); 0: none.
  double collective_timeout_s = 0;
};

struct StepResult {
  model::Losses losses;  // means (or sums) over micro-batches and ranks
  double grad_norm = 0;  // before clipping; 0 when the update was skipped for a non-finite loss
  bool applied = false;  // false: a loss or the gradient was not finite on some rank; nothing was updated
};

class StepEngine {
 public:
  // forward_backward(micro, scale, on_ready): runs micro-batch `micro` through the model, adds scale * its loss's
  // gradient (passing on_ready to the model's backward) and returns its losses.
  using MicroStep = std::function<model::Losses(int micro, float scale, const model::ReadyHook& on_ready)>;

  // `comm` is the host communicator of the ranks (losses, flags; the gradients of CPU models). Not collective.
  StepEngine(model::BrainModel& model, runtime::Communicator& comm, const StepOptions& options);
  ~StepEngine();

  void attach(HostModule module) { head_ = module; }

  // Collective: every rank calls it with the same micro_batches. head_lr: the attached module's learning rate.
  StepResult step(int micro_batches, const MicroStep& forward_backward, double lr, double head_lr = 0);

  // Losses of a forward-only pass reduced like step()'s (held-out batches): sums[i] over this rank's micro-batches.
  model::Losses reduce_losses(const std::vector<model::Losses>& per_micro_batch);

  // Names what the ranks are doing ("step 120") in a collective timeout's report, on the host communicator and on
  // the device's.
  void set_context(const std::string& context);

  // Seconds blocked in gradient and loss communication since construction.
  double communication_seconds() const;
  // Buckets per step and the mean share of their all-reduce time hidden behind backward (0 when not bucketed).
  int n_buckets() const;
  double mean_hidden_fraction() const { return steps_ ? hidden_sum_ / double(steps_) : 0.0; }
  bool overlapped() const { return overlap_ != nullptr; }
  // "mpi", "nccl on the device", "mpi through the host", ...: how the gradients travel.
  std::string describe() const;

 private:
  void reduce_gradients();

  model::BrainModel& model_;
  runtime::Communicator& comm_;
  StepOptions options_;
  std::unique_ptr<runtime::Communicator> device_comm_;  // GPU models over several ranks (or "nccl")
  std::string why_host_;  // why "auto" took the host path for a GPU model ("" where it did not)
  std::unique_ptr<runtime::GradientBuckets> overlap_;   // buckets started during the last micro-batch's backward
  model::ReadyHook on_ready_;
  std::vector<char> reported_;
  std::vector<float> staging_;  // a GPU model's gradients on the host, for a host all-reduce
  HostModule head_;
  double device_comm_seconds_ = 0, hidden_sum_ = 0;
  int64_t steps_ = 0;
};

}  // namespace bfm::launch
