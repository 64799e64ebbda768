// The model card of a released checkpoint (its README.md): what the model is, what it was trained on and for how
// long, the last training and held-out losses, the loss plot, and how to load it in PyTorch.
#pragma once

#include <cstdint>
#include <string>

#include "model/config.h"

namespace bfm::launch {

struct CardInputs {
  model::ModelConfig config;
  int64_t steps = 0;
  int batch_size = 0;             // global batch
  int ranks = 1;                  // that trained it
  std::string data;               // "synthetic windows (seed 1)", "corpus /data/hcp (...)"
  std::string source_checkpoint;  // the training checkpoint it came from ("" when written at the end of a run)
  std::string metrics_jsonl;      // the run's metrics (JSON lines): the last losses are read from it
  std::string plot_file;          // a PNG beside README.md ("" for none)
  double seconds = 0;             // training time (0: unknown)
};

std::string model_card(const CardInputs& in);

}  // namespace bfm::launch
