// The pre-training loop: draw windows, mask them, forward, backward, clip, AdamW with warm-up and cosine decay;
// progress lines on stderr, metrics as JSON lines, a fixed held-out batch evaluated before and after.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "launch/run_config.h"
#include "model/brain_model.h"

namespace bfm::launch {

struct TrainResult {
  std::unique_ptr<model::BrainModel> model;
  model::Losses first, last;  // held-out losses before the first step and after the last
  int64_t skipped_steps = 0;  // updates skipped for a non-finite loss or gradient
  double seconds = 0;
};

struct TrainOptions {
  bool verbose = true;         // progress lines on stderr
  std::string metrics_path;    // JSON lines; empty: none
};

TrainResult pretrain(const RunConfig& config, const TrainOptions& options);

// Whether train.device puts the run on the GPU; throws bfm::Error (naming the config) when it asks for a GPU this
// build or machine does not have. pretrain() calls it too; commands call it first, before writing anything.
bool train_on_gpu(const RunConfig& config);

// ("loss", total), ("mae", ...), ... for the losses present.
std::vector<std::pair<std::string, double>> named_losses(const model::Losses& losses);

}  // namespace bfm::launch
