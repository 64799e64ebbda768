// bfm convert's job: real scans into a corpus (the command line is launch/cli/cmd_convert.cpp).
//
// Finding scans: io/bids.h (BIDS raw scans and fMRIPrep derivatives, TR by sidecar inheritance). Their events,
// stimulus features and participants: launch/data/study_tables.h; their fMRIPrep confounds (--confounds, --scrub):
// io/confounds.h; all read and checked before anything is written.
//
// Sharding and resuming. Subjects are sorted and grouped, --subjects-per-shard at a time, into shard-00000.h5,
// shard-00001.h5...; shard i is written by rank i % ranks (ShardWriter: under NAME.tmp, renamed when whole). A shard
// whose final file exists from the same atlas and preprocessing is skipped, so rerunning an interrupted conversion
// resumes; the grouping does not depend on the number of ranks. Rank 0 writes manifest.json when every rank is done.
//
// In independent jobs (a Slurm job array, slurm/convert.sbatch): `--part I/N` converts only the shards i with
// i % N == I (shared by its ranks the same way: the k-th of them to rank k % ranks) and writes no manifest; once
// every part is done, `--manifest-only` with the same options checks that every shard is there and is this
// conversion's (as resuming does), names any missing one, and writes manifest.json.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/shard.h"

namespace bfm::launch {

struct ConvertOptions {
  std::string bids, atlas, out, study, scaling = "zscore";
  std::vector<std::string> scans;
  double target_tr = 0;
  bool overwrite = false, no_detrend = false;
  int subjects_per_shard = 16;
  int64_t chunk_rows = io::kShardChunkRows;
  uint64_t split_seed = 17;
  double train_fraction = 0.8, validation_fraction = 0.1;
  std::string part;            // "I/N": only this part's shards, no manifest
  bool manifest_only = false;  // only manifest.json, from the shards the parts wrote
  // The study's tables (launch/data/study_tables.h): events' label and stimulus columns, the stimulus feature table,
  // and participants.tsv's diagnosis column ("COLUMN" or "COLUMN=POSITIVE_VALUE"; "" = the column "diagnosis").
  std::string label_column = "trial_type", stim_column = "stim_file", stim_features, diagnosis;
  bool allow_missing_stimuli = false;
  // fMRIPrep's confounds (io/confounds.h): none|motion6|motion24|acompcor|FILE.json, regressed out with the detrending;
  // --scrub FD > 0 drops the volumes whose framewise_displacement exceeds FD, and a run left with fewer than
  // scrub_min_length volumes (the model window) is skipped with a note.
  std::string confounds = "none";
  double scrub = 0;
  int64_t scrub_min_length = 64;
};

// Runs the conversion on every rank of the world (or writes the manifest only); returns the exit status. Needs HDF5
// and nifti_clib (BFM_WITH_HDF5, BFM_WITH_NIFTI).
int convert(const ConvertOptions& options);

}  // namespace bfm::launch
