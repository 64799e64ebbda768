// Where pre-training's windows come from, each rank its part of every global batch: windows generated in memory
// (io/synthetic_windows.h), or a corpus folder through the prefetching loader (io/window_loader.h). A source's state
// (RNG words, or the sampler's epoch and batch) goes into training checkpoints, so a resumed run draws the same
// batches as the run straight through.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "launch/train/run_config.h"

namespace bfm::launch {

// This rank's share of a global batch: global rows r, r + R, r + 2R, ... (the window sampler's assignment), so that
// the union over ranks is the global batch whatever R is.
struct LocalBatch {
  int rows = 0;
  std::vector<float> x;       // [rows, T, P]
  std::vector<float> stim;    // [rows, S] or empty
  std::vector<uint8_t> mask;  // [rows, N] or empty
};

class DataSource {
 public:
  virtual ~DataSource() = default;
  // x and stim of this rank's rows of the next global batch.
  virtual void next(LocalBatch& b) = 0;
  virtual std::vector<uint64_t> state() const = 0;
  virtual void restore(const std::vector<uint64_t>& state) = 0;
  virtual double wait_seconds() const { return 0.0; }
  virtual std::string describe() const = 0;
  virtual int64_t batches_per_epoch() const { return 0; }  // 0: no epochs (generated data)
};

// The training source of a run and a held-out batch (this rank's rows of one fixed global batch), with the corpus'
// provenance for the released config.
struct RunData {
  std::unique_ptr<DataSource> train;
  LocalBatch validation;
  std::string atlas = "synthetic";  // the corpus' atlas ("mixed" when its shards name several)
  double tr = 0;                    // the TR every run shares (0 when they differ, or synthetic)
  std::string provenance;           // the corpus' provenance as JSON text (launch/data/provenance.h); "" = none
  std::vector<std::string> studies;  // the studies of the training runs (corpus order of first appearance)
  int64_t subjects = 0;              // the training subjects (0 for synthetic windows)
};

// data.source "synthetic" or "corpus" (checked against the model: parcels, enough held-out windows). Collective
// over the ranks only through the files they read. on_gpu: the rank feeds a GPU (two reading threads by default).
RunData open_run_data(const RunConfig& config, int rank, int ranks, bool on_gpu);

}  // namespace bfm::launch
