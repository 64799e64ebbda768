// bfm synth: a synthetic multi-study corpus with known structure (io/synthetic_corpus.h), made in parallel by the
// ranks: shard j goes to rank j % ranks, so the corpus is the same whatever the number of ranks. Rank 0 then writes
// the ground truth and manifest.json.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "io/synthetic_corpus.h"
#include "launch/commands.h"
#include "runtime/error.h"
#include "runtime/progress.h"
#include "runtime/world.h"

namespace bfm::launch {

namespace {

struct SynthOptions {
  io::SyntheticCorpusConfig corpus;
  std::string out;
  bool overwrite = false;
};

void barrier([[maybe_unused]] const runtime::World& world) {
#ifdef BFM_WITH_MPI
  if (world.size > 1) MPI_Barrier(world.comm);
#endif
}

int run(const SynthOptions& opt) {
  namespace fs = std::filesystem;
#ifndef BFM_WITH_HDF5
  fail("bfm synth needs HDF5: this bfm was built without it (BFM_WITH_HDF5=OFF)");
#endif
  const io::SyntheticCorpus corpus(opt.corpus);  // checks the numbers before anything touches the disk
  const runtime::World& world = runtime::world();
  const fs::path dir(opt.out);
  if (fs::exists(dir)) {
    require(fs::is_directory(dir), opt.out, ": exists and is not a folder");
    require(opt.overwrite || fs::is_empty(dir), opt.out,
            ": output folder exists and is not empty (pass --overwrite to replace a corpus there)");
  }
  barrier(world);  // every rank has checked before rank 0 removes anything
  if (world.rank == 0) {
    fs::create_directories(dir);
    // --overwrite replaces what a corpus consists of, and nothing else in the folder.
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      if (name.starts_with("shard-") || name.starts_with("manifest.json") || name.starts_with("ground_truth."))
        fs::remove(entry.path());
    }
  }
  barrier(world);

  const auto& c = corpus.config();
  const int64_t mine = [&] {
    int64_t n = 0;
    for (int64_t j = world.rank; j < corpus.n_shards(); j += world.size)
      n += std::min(c.n_subjects, (j + 1) * c.subjects_per_shard) - j * c.subjects_per_shard;
    return n;
  }();
  if (world.rank == 0)
    runtime::log_line("synth: " + std::to_string(c.n_subjects) + " subjects, " + std::to_string(c.n_parcels) +
                      " parcels, " + runtime::format_duration(c.minutes * 60) + " each, " + std::to_string(c.n_studies) +
                      " studies, " + std::to_string(corpus.n_shards()) + " shards on " + std::to_string(world.size) +
                      " rank(s) -> " + opt.out);
  runtime::Stopwatch clock;
  double last_log = 0;
  int64_t done = 0;
  corpus.write_shards(opt.out, world.rank, world.size, [&] {
    ++done;
    if (world.rank != 0) return;
    const double t = clock.seconds();
    if (t - last_log < 5.0 && done != mine) return;
    last_log = t;
    // Rank 0 sees only its own share; the ranks' shares are equal to within a shard.
    const double rate = done / std::max(t, 1e-9) * world.size;
    char line[160];
    std::snprintf(line, sizeof line, "synth: rank 0 %lld/%lld subjects of its share, %.1f subjects/s in all, ETA %s",
                  static_cast<long long>(done), static_cast<long long>(mine), rate,
                  runtime::format_duration((mine - done) / std::max(rate / world.size, 1e-9)).c_str());
    runtime::log_line(line);
  });
  barrier(world);
  if (world.rank == 0) {
    const double t = clock.seconds();
    corpus.write_ground_truth(opt.out);
    corpus.write_manifest(opt.out);
    char line[200];
    std::snprintf(line, sizeof line, "synth: %lld subjects in %.1f s (%.1f subjects/s on %d rank(s)); wrote %s/",
                  static_cast<long long>(c.n_subjects), t, c.n_subjects / std::max(t, 1e-9), world.size,
                  opt.out.c_str());
    runtime::log_line(std::string(line) + " shard-*.h5, manifest.json, ground_truth.h5, ground_truth.json");
  }
  barrier(world);
  return 0;
}

}  // namespace

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
  return [opt]() -> int { return run(*opt); };
}

}  // namespace bfm::launch
