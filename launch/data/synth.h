// bfm synth's job (the command line is launch/cli/cmd_synth.cpp):
// a synthetic multi-study corpus with known structure (io/synthetic_corpus.h), made in parallel by the
// ranks: shard j goes to rank j % ranks, so the corpus is the same whatever the number of ranks. Rank 0 then writes
// the ground truth and manifest.json.
//
// In independent jobs (a Slurm job array, slurm/synth.sbatch): `--part I/N` writes only the shards j with
// j % N == I (shared by its ranks the same way) and no manifest; once every part is done, `--manifest-only` with the
// same options checks that every shard is there and is this corpus's, and writes the ground truth and manifest.json.
// The corpus is the same as one `bfm synth` of the same options.
#pragma once

#include <string>

#include "io/synthetic_corpus.h"

namespace bfm::launch {

struct SynthOptions {
  io::SyntheticCorpusConfig corpus;
  std::string out;
  bool overwrite = false;
  std::string part;            // "I/N": only this part's shards, no manifest
  bool manifest_only = false;  // only the ground truth and manifest.json, from the shards there
};

// Writes the corpus (or this part's shards, or only the manifest) on every rank of the world; returns the exit
// status.
int synthesize(const SynthOptions& options);

}  // namespace bfm::launch
