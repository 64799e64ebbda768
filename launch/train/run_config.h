// A run's configuration: one TOML file ([model], [data], [train]) with command-line overrides
// `--set section.key=value` (the value in TOML syntax: 64, 1e-3, "tube", ["mae", "contrastive"]).
// Every key is checked: an unknown key, a wrong type or a bad value is an error that names the file and the key.
// The defaults are the initialisers below (and, for the keys they hold, model::ModelConfig's and
// runtime::AdamWConfig's): a default-constructed RunConfig is the built-in configuration, which both the parser
// (keys a file leaves out) and `bfm config --defaults` (default_config_toml) take from it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/masking.h"
#include "runtime/optimizer.h"

namespace bfm::launch {

struct DataConfig {
  std::string source = "synthetic";  // windows generated in memory (io/synthetic_windows.h) | "corpus"
  std::string corpus;                // source = "corpus": the corpus folder (bfm synth / bfm convert)
  int64_t stride = 10;               // corpus windows start every `stride` time points (jittered per epoch)
  int64_t memory_budget_mb = 256;    // corpus read-ahead and chunk cache per rank
  std::string shuffle = "window";    // corpus: "window" (every window shuffled over the corpus) | "block"
  int64_t shuffle_blocks = 64;       // shuffle = "block": blocks of 256 time points per group (the shuffle buffer)
  int read_threads = 0;              // corpus: reading threads per rank; 0: 2 on GPU ranks, 1 on CPU ranks
  std::vector<std::string> exclude_studies;  // corpus: studies (/runs/study) left out of training and validation
  int n_networks = 6;
  int n_categories = 16;
  double noise = 0.3;
  double stim_gain = 1.5;  // stimulus-driven response relative to intrinsic dynamics
  uint64_t seed = 1;
};

struct TrainConfig {
  int64_t steps = 300;
  int64_t epochs = 0;      // > 0 (corpus data): train this many passes over the training windows instead of `steps`
  int batch_size = 16;     // the GLOBAL batch: windows per optimizer step over all ranks
  int micro_batch = 0;     // windows per forward/backward on one rank; 0: batch_size / ranks (no accumulation)
  int64_t warmup_steps = 30;
  double min_lr_ratio = 0.1;
  runtime::AdamWConfig optimizer{};
  model::MaskStrategy mask_strategy = model::MaskStrategy::random;
  uint64_t seed = 0;
  int64_t log_every = 10;
  std::string out = "runs/bfm";
  std::string device = "auto";     // auto (the GPU where there is one) | cpu | cuda
  std::string precision = "bf16";  // on the GPU: bf16 (mixed precision) | fp32 (checking)
  int64_t validate_every = 50;     // held-out loss every N steps (and at the start and the end)
  int64_t checkpoint_every = 100;  // training checkpoint every N steps (0: only when stopped by a signal and at the end)
  int keep_checkpoints = 2;        // the newest K kept
  int64_t max_bad_steps = 5;       // this many non-finite steps in a row stop the run
  std::string comm = "auto";       // auto | self | mpi | nccl
  double bucket_mb = 25;           // gradient all-reduce bucket size
  bool zero = false;               // ZeRO stage 1: AdamW's moments sharded over the ranks (CPU)
  // GPU ranks with NCCL: the buckets' all-reduces start on the communicator's stream while backward is still running
  // (ordered by events); off: one all-reduce of the whole device arena after backward (the path tested on a GPU).
  bool gpu_overlap = false;
  // A collective that waits longer than this (a rank stopped, hung or lost) ends the job on every rank that waits,
  // naming the collective, the step and the ranks that do not answer (exit status 76, for a requeue); 0: never.
  double collective_timeout_s = 300;
};

struct RunConfig {
  // A small model that trains in minutes on two cores. The keys not named here (mlp_ratio, mask_ratio, ln_eps, the
  // loss weights) keep model::ModelConfig's defaults.
  model::ModelConfig model = [] {
    model::ModelConfig m;
    m.n_parcels = 64;
    m.window = 64;
    m.patch_len = 8;
    m.d_model = 128;
    m.n_heads = 4;
    m.n_layers = 4;
    m.mae = true;  // objectives = ["mae"]
    m.decoder = model::DecoderConfig{64, 4, 2};  // d_model, n_heads, n_layers
    m.stim_dim = 16;
    m.proj_dim = 32;
    return m;
  }();
  DataConfig data;
  TrainConfig train;
  std::string source;  // where it came from, for messages
};

// Reads `path` (may be empty: the built-in defaults) over a default-constructed RunConfig and applies `overrides`
// ("train.steps=100"), then validates. model_only (bfm init): a corpus source without data.corpus is not an error,
// since only [model] is used (a training config may leave the corpus to pretrain's command line).
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides, bool model_only = false);

// The built-in defaults (a default-constructed RunConfig) as a commented TOML document (`bfm config --defaults`).
std::string default_config_toml();

}  // namespace bfm::launch
