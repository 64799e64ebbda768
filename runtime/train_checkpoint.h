// The training checkpoint: everything a pre-training run needs to resume bit for bit (parameters, AdamW moments,
// step counters, the sampler's position, the run-level RNG streams, the config and the metrics so far) in one HDF5
// file that all ranks write together. docs/CHECKPOINT.md gives the layout, readable with h5py alone.
//
// Not the RELEASED checkpoint (model/released_checkpoint.h: safetensors + config.json for inference and fine-tuning).
//
// Under MPI with more than one rank (runtime::world()) the file is written and read collectively through MPI-IO;
// otherwise through plain HDF5. Parameters are identical on every rank (data-parallel replicas): each rank writes
// whole tensors of its even part of the arena. Moments are either full on every rank (each writes its even part) or
// ZeRO-1 shards (each writes its own range). On read every rank gets the full parameters and its moment range,
// which may differ from the ranges that wrote the file (resuming on another number of ranks).
//
// Every value carries a checksum (the tensors an additive one, so ranks sum their parts; the state's datasets FNV-1a
// of their bytes; HDF5 checksums its own metadata, the attributes included): a flipped byte is an error naming the
// file and dataset, as is a truncated file, a tensor of another shape (a checkpoint of another model config), or
// ranks that disagree on the training state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bfm::runtime {

struct TrainState {  // what a resume needs, beyond the parameters
  int64_t step = 0;  // optimizer steps completed
  int64_t skipped_steps = 0, skipped_in_a_row = 0;
  uint64_t sampler_epoch = 0, sampler_batch = 0;  // io::SamplerState of the training data
  std::vector<uint64_t> rng_state;                // run-level RNG streams (mask RNG etc.), the same on all ranks
  std::string config_json;                        // the run config, to check a resume uses the same model
  std::string metrics_jsonl;                      // the metrics so far (rank 0's), restored into metrics.jsonl
  int world_size = 1;  // ranks that wrote it: filled in by the writer (the value passed in is ignored)
};

// One tensor of the arena: its name, shape and place (in floats). runtime/ knows no model: the model hands its
// layout over as this table (model::BrainModel::checkpoint_tensors).
struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0, size = 0;
};

struct CheckpointTensors {  // the arenas, full size on every rank (data-parallel replicas) unless sharded
  std::vector<NamedTensor> tensors;  // in arena order
  int64_t arena_size = 0;            // floats (tensors plus any padding between them)
  float* params = nullptr;           // arena_size floats, the same on every rank
  float* m = nullptr;                // AdamW moments: arena_size floats, or the shard below
  float* v = nullptr;
  // ZeRO-1: when set, m and v hold only [shard_begin, shard_end) of the arena on this rank: one contiguous range per
  // rank, ranks in order, together covering [0, arena) (checked). Either every rank is sharded or none is.
  int64_t shard_begin = -1, shard_end = -1;

  bool has(const std::string& name) const {
    for (const NamedTensor& t : tensors)
      if (t.name == name) return true;
    return false;
  }
};

#ifdef BFM_WITH_HDF5

// Writes dir/ckpt-<step, 8 digits>.h5 (every rank calls it): first as dir/.ckpt-<step>.h5.partial, which rank 0
// renames after every rank has flushed it and it is fsynced; then dir/latest (the file name, one line) is replaced
// atomically; then the oldest ckpt-*.h5 beyond `keep` (>= 1, by step; never the one just written) and stale
// .partial files are deleted. A process killed at any point leaves the previous checkpoint and latest intact.
// Creates dir when missing. Returns the path. Throws bfm::Error naming the file (the same error on every rank).
std::string write_train_checkpoint(const std::string& dir, const CheckpointTensors& t, const TrainState& s, int keep);

// The checkpoint that dir/latest names, or "" when dir/latest does not exist. A latest naming a file that is
// missing or not readable HDF5 is an error naming both. Not collective (any rank may ask alone).
std::string latest_train_checkpoint(const std::string& dir);

// Where a resume may start, newest first: the file dir/latest names, then every other ckpt-<step>.h5 of dir by step,
// descending. `notes` gets what was wrong with dir/latest (unreadable, naming a missing file), if anything. Empty
// when dir has no checkpoint. The caller tries them in order and skips a damaged one (read_train_checkpoint and
// train_checkpoint_config throw naming the damage), saying so. Not collective; every rank gets the same list.
std::vector<std::string> train_checkpoint_candidates(const std::string& dir, std::vector<std::string>& notes);

// The run settings a checkpoint was written with (/state/config_json), read alone: a resume compares them before it
// reads any tensor. Not collective.
std::string train_checkpoint_config(const std::string& path);

// Reads the checkpoint into t (every rank; collectively under MPI): full parameters (the arena's padding between
// tensors is zeroed), moments full or this rank's shard. Checks the tensors' names, shapes and offsets and the arena
// size against t.tensors (a checkpoint of another model config is an error naming the file and the first tensor that
// differs) and every checksum. Returns the state.
TrainState read_train_checkpoint(const std::string& path, const CheckpointTensors& t);

#endif  // BFM_WITH_HDF5

}  // namespace bfm::runtime
