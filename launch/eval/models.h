// The models a report compares beside the pre-trained checkpoint: fine-tuned and from-scratch models per task, given
// as folders (bfm eval --finetuned TASK=DIR, --scratch TASK=DIR) or trained here on the pre-training subjects
// (--finetune-steps N > 0: launch/train/finetune.h, written into OUT/finetuned-TASK and OUT/scratch-TASK).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "launch/eval/data.h"
#include "launch/eval/evaluate.h"
#include "model/brain_model.h"
#include "runtime/comm.h"

namespace bfm::launch::eval {

struct ModelSources {
  std::string checkpoint;                       // the pre-trained checkpoint's folder (provenance, fine-tuned heads)
  std::vector<std::string> finetuned, scratch;  // TASK=DIR
  int64_t finetune_steps = 0;                   // > 0: fine-tune (and train from scratch) the tasks that need it
  int64_t finetune_head_steps = 0;              // of those, the first ones train the head alone (FinetuneOptions)
  std::string out;                              // the report folder
  std::string device = "auto";                  // fine-tuning's device (model/placement.h)
  uint64_t seed = 0;
};

struct ModelSet {
  EvalModels models;  // points into `owned` and `heads` (and at the pre-trained model)
  std::vector<std::unique_ptr<model::BrainModel>> owned;
  std::vector<std::unique_ptr<model::TaskHead>> heads;
  nlohmann::json provenance;  // corpus, checkpoint, ranks, and where each fine-tuned / scratch model came from
};

// Collective over comm when it fine-tunes. Errors name the bad TASK=DIR or folder.
ModelSet gather_models(const model::BrainModel& pretrained, const EvalData& data, const EvalOptions& options,
                       const ModelSources& sources, runtime::Communicator& comm);

}  // namespace bfm::launch::eval
