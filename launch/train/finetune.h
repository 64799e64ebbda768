// Full fine-tuning of a brain model on a downstream task (bfm finetune, and the `finetune` / `scratch` methods of bfm
// eval): a task head on the encoder's output tokens (model/task_head.h: each token reduced to C values by a projection
// that starts as the model's probe basis, launch/eval/features.h, then a linear map over all of them), trained
// with every encoder weight on the labelled trials of the corpus' pre-training subjects (never a held-out subject),
// data parallel over the ranks of a communicator (each rank its share of every global batch, gradients summed, the
// same AdamW step everywhere), on the CPU or one GPU per rank.
//
// Tasks: "category" (cross-entropy over the stimulus categories) and "embedding" (mean squared error against the
// stimulus embedding, standardised per dimension on the training trials).
//
// The fine-tuned model is written as a released checkpoint (model.safetensors + config.json, the encoder and the
// pre-training heads, unchanged in layout) plus task_head.safetensors and task.json (the head's tensors, the task,
// its outputs, the target standardisation, the training summary): docs/EVALUATION.md.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "launch/eval/data.h"
#include "launch/eval/features.h"
#include "model/brain_model.h"
#include "model/task_head.h"
#include "runtime/comm.h"

namespace bfm::launch {

struct FinetuneOptions {
  std::string task = "category";  // "category" | "embedding"
  int64_t steps = 200;
  int batch_size = 32;             // global: windows per optimizer step over all ranks
  double lr = 5e-4;                // encoder
  double head_lr = 5e-3;           // task head
  double weight_decay = 0.05;
  int64_t warmup_steps = 20;
  // The first head_steps steps train the task head alone (the encoder's learning rate 0), then everything: "linear
  // probe, then fine-tune" (LP-FT), so that the encoder's first gradients come through a head that already fits
  // rather than through a zero output map, which moves pre-trained features most where labels are few.
  int64_t head_steps = 0;
  double validation_fraction = 0.15;  // of the pre-training subjects, held back to report a validation loss
  // The head's values per token: 0 chooses as bfm eval's probe does (the fewest components explaining 90 % of the
  // token variance, at most 4,096 / N); N > 0 keeps N (at most d_model).
  int components = 0;
  // Non-empty: the ids of the only pre-training subjects whose labels it may use (bfm eval --labelled-subjects), all
  // of them trained on (no hold-back: the validation loss is then a training loss).
  std::vector<std::string> labelled_subjects;
  uint64_t seed = 0;
  std::string device = "cpu";      // cpu | cuda | auto (model/placement.h)
  // The head's starting projection where the caller has it already (initial_head_projection of the same initial
  // model, data and components: bfm eval fine-tunes one model for several tasks); null: fitted here.
  const eval::TokenProjection* initial_projection = nullptr;
  bool verbose = true;             // progress lines (rank 0)
  int64_t log_every = 20;
};

struct FinetuneResult {
  std::unique_ptr<model::BrainModel> model;  // on the device it was trained on
  model::TaskHead head;  // the trained head (model/task_head.h)
  double first_train_loss = 0, last_train_loss = 0;
  double first_validation_loss = 0, last_validation_loss = 0;
  double validation_accuracy = -1;  // category only
  int64_t train_trials = 0, validation_trials = 0, steps = 0;
  double seconds = 0;
};

// The projection a task head on `init` starts from: its probe basis (launch/eval/features.h, fit_probe_basis) on the
// windows of every pre-training subject of `data`, no label read, `components` as FinetuneOptions::components.
// Collective over comm.
eval::TokenProjection initial_head_projection(const model::BrainModel& init, const eval::EvalData& data,
                                              int components, const std::string& device, runtime::Communicator& comm);

// Fine-tunes `init` (a copy is trained; pass a freshly initialised model for training from scratch) on the
// population (non-held-out) subjects' trials of `data`. Collective over comm.
FinetuneResult finetune(const model::BrainModel& init, const eval::EvalData& data, const FinetuneOptions& options,
                        runtime::Communicator& comm);

// Writes the released checkpoint plus task_head.safetensors and task.json (see above) to dir (replaced when whole).
void save_finetuned(const std::string& dir, const FinetuneResult& result, const FinetuneOptions& options,
                    const std::string& source_checkpoint);
}  // namespace bfm::launch

