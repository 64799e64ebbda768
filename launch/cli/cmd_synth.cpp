// bfm synth: a synthetic multi-study corpus with known structure; the job is launch/data/synth.h.
#include <CLI/CLI.hpp>
#include <memory>

#include "launch/cli/commands.h"
#include "launch/data/synth.h"

namespace bfm::launch {

Command add_synth_command(CLI::App& app) {
  auto opt = std::make_shared<SynthOptions>();
  auto* cmd = app.add_subcommand("synth", "Make a synthetic multi-study fMRI corpus with known structure and its "
                                          "ground truth (runs alone or under mpirun)");
  auto& c = opt->corpus;
  cmd->add_option("--subjects", c.n_subjects, "Number of subjects")->required()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  cmd->add_option("--out", opt->out, "Output corpus folder")->required();
  cmd->add_option("--parcels", c.n_parcels, "Parcels per time point")->capture_default_str()->check(CLI::Range(8, 100000));
  cmd->add_option("--minutes", c.minutes, "Minutes of scanning per subject")->capture_default_str()
      ->check(CLI::Range(0.05, 10000.0));
  cmd->add_option("--studies", c.n_studies, "Studies (TR 0.8 / 1.5 / 2.0 s in turn; every third is rest only)")
      ->capture_default_str()->check(CLI::Range(1, 1000));
  cmd->add_option("--sites", c.sites_per_study,
                  "Sites (scanners) per study: each its own gain, noise and coil profile; subjects take them in turn")
      ->capture_default_str()->check(CLI::Range(1, 100));
  cmd->add_option("--chunk-rows", c.chunk_rows,
                  "Time points per HDF5 chunk (smaller: fewer bytes read per random window; larger: bigger reads)")
      ->capture_default_str()->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  cmd->add_option("--seed", c.seed, "Seed of everything (the ground truth and every run)")->capture_default_str();
  cmd->add_flag("--float16", c.float16, "Store the time series as float16");
  cmd->add_option("--stim-dim", c.stim_dim, "Stimulus embedding size")->capture_default_str()
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--networks", c.n_networks, "Latent networks (at least 6)")->capture_default_str()
      ->check(CLI::Range(6, 1000));
  cmd->add_option("--categories", c.n_categories, "Stimulus categories")->capture_default_str()
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--clips", c.n_clips, "Stimulus clips (at least --categories)")->capture_default_str()
      ->check(CLI::Range(1, 10000000));
  cmd->add_option("--subjects-per-shard", c.subjects_per_shard, "Subjects per shard file")->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  cmd->add_flag("--overwrite", opt->overwrite, "Replace a corpus already in --out");
  cmd->add_option("--part", opt->part, "I/N: write only the shards j with j % N == I and no manifest (part I of N "
                  "independent jobs, e.g. a Slurm array; then --manifest-only)");
  cmd->add_flag("--manifest-only", opt->manifest_only, "Write only the ground truth and manifest.json, once every "
                "--part job has written its shards (same options; names any missing shard)");
  return [opt]() -> int { return synthesize(*opt); };
}

}  // namespace bfm::launch
