#include "launch/data/synth.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "io/corpus_manifest.h"
#include "io/shard.h"
#include "io/synthetic_corpus.h"
#include "base/error.h"
#include "runtime/progress.h"
#include "runtime/world.h"

namespace bfm::launch {

namespace {


void barrier([[maybe_unused]] const runtime::World& world) {
#ifdef BFM_WITH_MPI
  if (world.size > 1) MPI_Barrier(world.comm);
#endif
}

// Writes this rank's shards of `part` with progress lines (rank 0's).
void write_shards(const SynthOptions& opt, const io::ShardPart& part, const io::SyntheticCorpus& corpus,
                  const runtime::World& world, const Stopwatch& clock) {
  const auto& c = corpus.config();
  const std::vector<int64_t> shards = io::shards_for(corpus.n_shards(), part, world.rank, world.size);
  int64_t mine = 0;
  for (int64_t j : shards) mine += corpus.shard_subjects(j);
  if (world.rank == 0)
    runtime::log_line("synth: " + std::to_string(c.n_subjects) + " subjects, " + std::to_string(c.n_parcels) +
                      " parcels, " + runtime::format_duration(c.minutes * 60) + " each, " + std::to_string(c.n_studies) +
                      " studies (" + std::to_string(c.sites_per_study) + " sites each), " +
                      std::to_string(corpus.n_shards()) + " shards" +
                      (part.whole() ? std::string()
                                    : " (part " + part.text() + ": the shards j with j % " +
                                          std::to_string(part.count) + " == " + std::to_string(part.index) + ")") +
                      " on " + std::to_string(world.size) + " rank(s) -> " + opt.out);
  double last_log = 0;
  int64_t done = 0;
  corpus.write_shards(opt.out, shards, [&] {
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
}

bool corpus_file(const std::string& name) {
  return name.starts_with("manifest.json") || name.starts_with("ground_truth.");
}

// --part I/N: this part's shards only, into a folder the other parts write too. A finished corpus there
// (manifest.json) is replaced only with --overwrite; this part's shards are always written anew (the generator
// is deterministic, so a rerun part, after a failure or a requeue, writes the same files); nothing else is touched.
int write_part(const SynthOptions& opt, const io::ShardPart& part, const io::SyntheticCorpus& corpus,
               const runtime::World& world) {
  namespace fs = std::filesystem;
  const fs::path dir(opt.out);
  if (fs::exists(dir)) require(fs::is_directory(dir), opt.out, ": exists and is not a folder");
  require(opt.overwrite || !fs::exists(dir / "manifest.json"), opt.out,
          ": holds a finished corpus (manifest.json); pass --overwrite to replace it part by part");
  barrier(world);
  if (world.rank == 0) {
    fs::create_directories(dir);
    std::error_code ec;  // other parts may remove the same files at the same time
    if (opt.overwrite)
      for (const auto& entry : fs::directory_iterator(dir)) {
        const std::string name = entry.path().filename().string();
        if (corpus_file(name)) fs::remove(entry.path(), ec);
      }
    for (int64_t j = part.index; j < corpus.n_shards(); j += part.count) {
      fs::remove(dir / io::shard_file_name(j), ec);
      fs::remove(dir / (io::shard_file_name(j) + ".tmp"), ec);
    }
  }
  barrier(world);
  Stopwatch clock;
  write_shards(opt, part, corpus, world, clock);
  barrier(world);
  if (world.rank == 0) {
    int64_t n = 0, subjects = 0;
    for (int64_t j = part.index; j < corpus.n_shards(); j += part.count) ++n, subjects += corpus.shard_subjects(j);
    char line[240];
    std::snprintf(line, sizeof line, "synth: part %s: %lld shard(s), %lld subjects in %.1f s; once every part is "
                  "done, bfm synth --manifest-only with the same options writes manifest.json",
                  part.text().c_str(), static_cast<long long>(n), static_cast<long long>(subjects), clock.seconds());
    runtime::log_line(line);
  }
  barrier(world);
  return 0;
}

// --manifest-only: the ground truth and manifest.json of a corpus whose shards the parts wrote.
int merge(const SynthOptions& opt, const io::SyntheticCorpus& corpus, const runtime::World& world) {
  namespace fs = std::filesystem;
  require(fs::is_directory(opt.out), opt.out, ": no such corpus folder (run the bfm synth --part I/N jobs first)");
  if (world.rank == 0) {
    const std::vector<int64_t> missing = corpus.missing_shards(opt.out);
    require(missing.empty(), opt.out, ": missing ", io::shard_list(missing, corpus.n_shards()),
            "; run the parts that write them (bfm synth --part I/N, shard j is part j % N) and then this again");
    Stopwatch clock;
    corpus.write_ground_truth(opt.out);
    corpus.write_manifest(opt.out);  // checks each shard is this corpus's first
    runtime::log_line("synth: " + std::to_string(corpus.n_shards()) + " shards of " +
                      std::to_string(corpus.config().n_subjects) + " subjects checked in " +
                      runtime::format_duration(clock.seconds()) + "; wrote " + opt.out +
                      "/ manifest.json, ground_truth.h5, ground_truth.json");
  }
  barrier(world);
  return 0;
}

}  // namespace

int synthesize(const SynthOptions& opt) {
  namespace fs = std::filesystem;
#ifndef BFM_WITH_HDF5
  fail("bfm synth needs HDF5: this bfm was built without it (BFM_WITH_HDF5=OFF)");
#endif
  require(opt.part.empty() || !opt.manifest_only, "--part and --manifest-only exclude each other: the parts write "
          "the shards, --manifest-only (run once after them) the manifest");
  const io::ShardPart part = opt.part.empty() ? io::ShardPart{} : io::parse_shard_part(opt.part);
  const io::SyntheticCorpus corpus(opt.corpus);  // checks the numbers before anything touches the disk
  const runtime::World& world = runtime::world();
  const fs::path dir(opt.out);
  if (opt.manifest_only) return merge(opt, corpus, world);
  if (!opt.part.empty()) return write_part(opt, part, corpus, world);
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

  Stopwatch clock;
  write_shards(opt, io::ShardPart{}, corpus, world, clock);
  barrier(world);
  const auto& c = corpus.config();
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


}  // namespace bfm::launch
