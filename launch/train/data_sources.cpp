#include "launch/train/data_sources.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <set>
#include <sstream>

#include "base/error.h"
#include "base/rng.h"
#include "io/synthetic_windows.h"
#ifdef BFM_WITH_HDF5
#include "io/corpus.h"
#include "io/corpus_manifest.h"
#include "io/window_loader.h"
#include "launch/data/provenance.h"
#endif

namespace bfm::launch {

namespace {

// Windows generated in memory: every rank draws the whole global batch from the same stream and keeps its rows.
class SyntheticSource final : public DataSource {
 public:
  SyntheticSource(const RunConfig& rc, int global, int rank, int ranks, uint64_t stream)
      : data_({rc.model.n_parcels, rc.model.window, rc.model.contrastive ? rc.model.stim_dim : 0, rc.data.n_networks,
               rc.data.n_categories, rc.data.noise, rc.data.stim_gain, rc.data.seed}),
        rng_(Rng::stream(rc.train.seed, stream)), global_(global), rank_(rank), ranks_(ranks),
        tp_(int64_t(rc.model.window) * rc.model.n_parcels), s_(rc.model.contrastive ? rc.model.stim_dim : 0) {}

  void next(LocalBatch& b) override {
    gx_.resize(global_ * tp_);
    gs_.resize(int64_t(global_) * s_);
    data_.sample(global_, rng_, gx_.data(), s_ ? gs_.data() : nullptr, nullptr);
    b.rows = global_ / ranks_;
    b.x.resize(b.rows * tp_);
    b.stim.resize(int64_t(b.rows) * s_);
    for (int j = 0; j < b.rows; ++j) {
      const int64_t g = rank_ + int64_t(j) * ranks_;
      std::copy_n(gx_.data() + g * tp_, tp_, b.x.data() + j * tp_);
      if (s_) std::copy_n(gs_.data() + g * s_, s_, b.stim.data() + int64_t(j) * s_);
    }
  }
  std::vector<uint64_t> state() const override {
    const auto s = rng_.state();
    return {s.begin(), s.end()};
  }
  void restore(const std::vector<uint64_t>& s) override {
    require(s.size() == 6, "training checkpoint: synthetic data state has ", s.size(), " words, expected 6");
    std::array<uint64_t, 6> a{};
    std::copy(s.begin(), s.end(), a.begin());
    rng_.set_state(a);
  }
  std::string describe() const override { return "synthetic windows"; }

 private:
  io::SyntheticWindows data_;
  Rng rng_;
  int global_, rank_, ranks_;
  int64_t tp_, s_;
  std::vector<float> gx_, gs_;
};

#ifdef BFM_WITH_HDF5
// A corpus folder (bfm synth / bfm convert): windows of the manifest's training subjects through the prefetching
// loader, this rank's part of each global batch as the distributed sampler assigns it.
struct CorpusRuns {
  std::vector<std::string> shard_paths;
  std::vector<int64_t> train_lengths, validation_lengths;  // per global run; 0 outside the split
  int64_t n_parcels = 0, stimulus_dim = 0;
  std::string summary;
  std::string atlas;  // the shards' atlas ("mixed" when they name several)
  double tr = 0;      // the TR every run shares, 0 when they differ
  std::string provenance;  // launch/data/provenance.h, as JSON text
  std::vector<std::string> train_studies;  // of the runs trained on, in order of first appearance
  int64_t train_subjects = 0;
};

CorpusRuns scan_corpus(const std::string& dir, const std::vector<std::string>& exclude_studies) {
  const io::CorpusManifest manifest = io::read_corpus_manifest(dir);
  CorpusRuns out;
  std::set<std::string> train(manifest.train.begin(), manifest.train.end());
  std::set<std::string> validation(manifest.validation.begin(), manifest.validation.end());
  const std::set<std::string> excluded(exclude_studies.begin(), exclude_studies.end());
  std::set<std::string> found, studies;  // the excluded studies seen; every study
  std::set<std::string> trained_on;       // the training subjects kept
  {
    io::Corpus corpus(dir, manifest.shard_files);
    std::set<std::string> atlases;
    std::set<double> trs;
    for (int64_t s = 0; s < corpus.n_shards(); ++s) {
      atlases.insert(corpus.shard(s).header().atlas);
      for (const io::Run& run : corpus.shard(s).runs()) trs.insert(run.tr);
    }
    out.atlas = atlases.size() == 1 ? *atlases.begin() : "mixed";
    out.tr = trs.size() == 1 ? *trs.begin() : 0.0;
    out.provenance = corpus_provenance(corpus).dump();
    for (int64_t s = 0; s < corpus.n_shards(); ++s) {
      const io::ShardReader& shard = corpus.shard(s);
      out.n_parcels = shard.header().n_parcels;
      out.stimulus_dim = std::max<int64_t>(out.stimulus_dim, shard.header().stimulus_dim);
      for (const io::Run& run : shard.runs()) {
        const bool kept = !excluded.count(run.study);
        if (!kept) found.insert(run.study);
        out.train_lengths.push_back(kept && train.count(run.subject) ? run.length : 0);
        if (kept && train.count(run.subject)) {
          trained_on.insert(run.subject);
          if (std::find(out.train_studies.begin(), out.train_studies.end(), run.study) == out.train_studies.end())
            out.train_studies.push_back(run.study);
        }
        out.validation_lengths.push_back(kept && validation.count(run.subject) ? run.length : 0);
        studies.insert(run.study);
      }
    }
  }  // no HDF5 call of ours may overlap a loader's
  out.train_subjects = int64_t(trained_on.size());
  std::string names;
  for (const std::string& s : studies) names += (names.empty() ? "" : ", ") + s;
  for (const std::string& study : excluded)
    require(found.count(study), dir, ": data.exclude_studies names '", study, "', a study no run of this corpus "
            "belongs to (its studies: ", names, ")");
  require(excluded.empty() || out.train_subjects > 0, dir, ": data.exclude_studies leaves no training subject (its "
          "studies: ", names, ")");
  for (const auto& f : manifest.shard_files) out.shard_paths.push_back((std::filesystem::path(dir) / f).string());
  std::ostringstream os;
  os << "corpus " << dir << " (" << manifest.shard_files.size() << " shards, " << manifest.n_subjects
     << " subjects: " << manifest.train.size() << " train, " << manifest.validation.size() << " validation)";
  for (const std::string& study : excluded) os << ", without study " << study;
  out.summary = os.str();
  return out;
}

class CorpusSource final : public DataSource {
 public:
  CorpusSource(const RunConfig& rc, const CorpusRuns& runs, int global, int rank, int ranks, bool on_gpu)
      : summary_(runs.summary), s_(rc.model.contrastive ? rc.model.stim_dim : 0) {
    io::SamplerOptions so;
    so.window = rc.model.window;
    so.stride = rc.data.stride;
    so.jitter = true;
    so.global_batch = global;
    so.seed = rc.train.seed;
    if (rc.data.shuffle == "block") {  // opt-in (docs/TRAINING.md, Data order); a checkpoint then records it
      so.block = io::kShardChunkRows;
      so.shuffle_blocks = rc.data.shuffle_blocks;
      summary_ += ", block shuffle of " + std::to_string(so.shuffle_blocks) + " blocks";
    }
    sampler_options_ = so;
    // A GPU rank's host has cores to spare and a step to feed: two readers (bench/RESULTS.md: the window shuffle at
    // `cat`'s speed); a CPU rank's cores compute.
    threads_ = rc.data.read_threads > 0 ? rc.data.read_threads : on_gpu ? 2 : 1;
    lengths_ = runs.train_lengths;
    paths_ = runs.shard_paths;
    rank_ = rank, ranks_ = ranks;
    budget_ = rc.data.memory_budget_mb << 20;
    start(io::SamplerState{});
  }
  void next(LocalBatch& b) override {
    io::WindowBatch w = loader_->next();
    b.rows = static_cast<int>(w.windows.size());
    b.x.swap(w.timeseries);
    if (s_) {
      require(static_cast<int64_t>(w.stimulus.size()) == int64_t(b.rows) * s_, summary_,
              ": model.stim_dim = ", s_, " but the corpus' stimulus embeddings have ",
              b.rows ? w.stimulus.size() / b.rows : 0, " dimensions");
      b.stim.swap(w.stimulus);
    }
    loader_->recycle(std::move(w));
  }
  std::vector<uint64_t> state() const override {
    const io::SamplerState s = loader_->state();
    return {s.epoch, s.batch};
  }
  void restore(const std::vector<uint64_t>& s) override {
    require(s.size() == 2, "training checkpoint: corpus sampler state has ", s.size(), " words, expected 2");
    start({s[0], s[1]});
  }
  double wait_seconds() const override { return waited_ + (loader_ ? loader_->data_wait_seconds() : 0.0); }
  int64_t batches_per_epoch() const override { return per_epoch_; }
  std::string describe() const override { return summary_; }

 private:
  void start(const io::SamplerState& state) {
    if (loader_) waited_ += loader_->data_wait_seconds();
    loader_.reset();
    io::WindowSampler sampler(lengths_, sampler_options_, rank_, ranks_);
    per_epoch_ = sampler.batches_per_epoch();
    sampler.restore(state);
    io::LoaderOptions lo{sampler_options_.window, budget_};
    lo.threads = threads_;
    loader_ = std::make_unique<io::WindowLoader>(paths_, std::move(sampler), lo);
  }
  std::string summary_;
  int64_t s_;
  io::SamplerOptions sampler_options_;
  std::vector<int64_t> lengths_;
  std::vector<std::string> paths_;
  int rank_ = 0, ranks_ = 1, threads_ = 1;
  int64_t budget_ = 0, per_epoch_ = 0;
  double waited_ = 0;
  std::unique_ptr<io::WindowLoader> loader_;
};
#endif

}  // namespace

RunData open_run_data(const RunConfig& rc, int rank, int ranks, bool on_gpu) {
  const auto& m = rc.model;
  const auto& t = rc.train;
  RunData out;
  if (rc.data.source == "synthetic") {
    (void)on_gpu;
    out.train = std::make_unique<SyntheticSource>(rc, t.batch_size, rank, ranks, 1);
    SyntheticSource held_out(rc, t.batch_size, rank, ranks, 3);
    held_out.next(out.validation);
    return out;
  }
#ifdef BFM_WITH_HDF5
  const CorpusRuns runs = scan_corpus(rc.data.corpus, rc.data.exclude_studies);
  out.atlas = runs.atlas;
  out.tr = runs.tr;
  out.provenance = runs.provenance;
  out.studies = runs.train_studies;
  out.subjects = runs.train_subjects;
  require(runs.n_parcels == m.n_parcels, rc.data.corpus, ": the corpus has ", runs.n_parcels,
          " parcels, the model (model.n_parcels) ", m.n_parcels);
  int64_t held_windows = 0;
  for (int64_t len : runs.validation_lengths)
    if (len >= m.window) held_windows += (len - m.window) / rc.data.stride + 1;
  require(held_windows >= t.batch_size, rc.data.corpus, ": its validation subjects hold ", held_windows,
          " windows of ", m.window, " time points (stride ", rc.data.stride, "), fewer than one global batch of ",
          t.batch_size, " for the held-out loss: use a corpus with more subjects or a smaller train.batch_size");
  {
    CorpusRuns held = runs;
    held.train_lengths = runs.validation_lengths;
    RunConfig vc = rc;
    vc.train.seed = t.seed + 1;
    vc.data.shuffle = "window";  // the held-out batch is the same whatever data.shuffle
    CorpusSource held_out(vc, held, t.batch_size, rank, ranks, on_gpu);
    held_out.next(out.validation);
  }
  out.train = std::make_unique<CorpusSource>(rc, runs, t.batch_size, rank, ranks, on_gpu);
  return out;
#else
  fail(rc.source, ": data.source = \"corpus\" needs HDF5, and this bfm was built without it");
#endif
}

}  // namespace bfm::launch
