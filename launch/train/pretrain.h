// The pre-training loop, data-parallel over the ranks of the world: each rank draws its part of every global batch
// (launch/train/data_sources.h: synthetic windows, or a corpus through the prefetching loader), masks it, and the
// step engine (launch/train/step_engine.h) runs forward and backward over its micro-batches, averages the gradients
// over ranks and applies clipping and AdamW with warm-up and cosine decay, identically on every rank, on whichever
// device the run is placed. Progress lines and metrics (JSON lines) from rank 0, a
// fixed held-out batch evaluated every train.validate_every steps, training checkpoints every
// train.checkpoint_every steps and on SIGUSR1/SIGTERM, resumed from by itself.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "launch/train/run_config.h"
#include "model/brain_model.h"
#include "model/placement.h"

namespace bfm::launch {

struct TrainResult {
  std::unique_ptr<model::BrainModel> model;  // on the device the run trained on
  model::Losses first, last;  // held-out losses at the (re)start and after the last step (last: not when stopped)
  int64_t skipped_steps = 0;  // updates skipped for a non-finite loss or gradient (over the whole run)
  int64_t steps_done = 0;     // optimizer steps completed, counting those before a resume
  bool stopped_by_signal = false;  // SIGUSR1 / SIGTERM: stopped at a step boundary after writing a checkpoint
  bool diverged = false;           // train.max_bad_steps non-finite steps in a row
  std::string resumed_from, last_checkpoint;
  std::string data_description;  // "synthetic windows", "corpus DIR (...)"
  // Provenance for the released config: the corpus' atlas ("mixed" when its shards name several) and the TR its
  // runs share (0 when they differ); "synthetic", 0 for in-memory windows.
  std::string data_atlas = "synthetic";
  double data_tr = 0;
  std::string data_provenance;  // the corpus' (launch/data/provenance.h), JSON text; "" for synthetic windows
  std::vector<std::string> data_studies;  // the studies trained on (the runs' study names); empty for synthetic
  int64_t data_subjects = 0;              // the subjects trained on; 0 for synthetic windows
  double seconds = 0;
};

struct TrainOptions {
  bool verbose = true;         // progress lines on stderr (rank 0)
  std::string metrics_path;    // JSON lines (rank 0); empty: none
  std::string checkpoint_dir;  // training checkpoints (resumed from when there is one); empty: none
  // Test hooks: behave as if a stop signal arrived just before this step (-1: never); make the inputs of these
  // steps NaN on every rank (a corrupt batch).
  int64_t stop_before_step = -1;
  std::vector<int64_t> nan_input_steps;

  // A silent run (tests, benchmarks): no progress lines, no metrics file, checkpoints in checkpoint_dir ("" none).
  static TrainOptions quiet(std::string checkpoint_dir = "") {
    TrainOptions o;
    o.verbose = false;
    o.checkpoint_dir = std::move(checkpoint_dir);
    return o;
  }
};

// `bfm pretrain`'s exit status after a stop signal: a checkpoint was written; run the same command again to go on
// (slurm/ requeues on it).
constexpr int kExitStoppedBySignal = 75;  // EX_TEMPFAIL
// Exit status after train.max_bad_steps non-finite steps in a row.
constexpr int kExitDiverged = 4;

TrainResult pretrain(const RunConfig& config, const TrainOptions& options);

// Where train.device and train.precision put the run (model/placement.h); throws bfm::Error (naming the config)
// when it asks for a GPU this build or machine does not have. pretrain() calls it too; commands call it first,
// before writing anything.
model::Placement run_placement(const RunConfig& config);

}  // namespace bfm::launch
