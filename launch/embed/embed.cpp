#include "launch/embed/embed.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/stopwatch.h"
#include "model/brain_model.h"
#include "model/placement.h"
#include "model/released_checkpoint.h"
#include "runtime/comm.h"
#include "runtime/progress.h"
#include "runtime/world.h"
#ifdef BFM_WITH_HDF5
#include "io/corpus.h"
#include "io/corpus_manifest.h"
#include "io/h5_arrays.h"
#include "launch/data/convert.h"
#include "launch/data/provenance.h"
#endif

namespace bfm::launch {

#ifndef BFM_WITH_HDF5
int embed(const EmbedOptions&) { fail("bfm embed reads a corpus and needs HDF5: this build has none"); }
#else

namespace {

namespace fs = std::filesystem;

// One window: a run of the corpus (global index) and its first time point.
struct Window {
  int64_t run = 0, start = 0;
};

// The runs of the corpus in global order (shard by shard) with their shard.
struct CorpusRun {
  int64_t shard = 0, local = 0;
  io::Run meta;
};

// Scans to a corpus in OUT/corpus, preprocessed as the checkpoint's corpus was (its provenance's steps).
std::string convert_scans(const EmbedOptions& o, const nlohmann::json& provenance, bool lead) {
  ConvertOptions c;
  c.bids = o.bids;
  c.scans = o.scans;
  c.atlas = o.atlas;
  c.out = (fs::path(o.out) / "corpus").string();
  if (provenance.is_object() && !provenance.empty()) {
    if (provenance.value("synthetic", false) && lead)
      runtime::log_line("warning: embed: " + o.checkpoint + " was pre-trained on a synthetic corpus; real scans "
                        "are preprocessed with its steps (detrend, z-score) but are another kind of data");
    c.no_detrend = !provenance.value("detrend", true);
    c.scaling = provenance.value("scaling", std::string("zscore"));
    c.target_tr = provenance.value("target_tr", 0.0);
    c.confounds = provenance.value("confounds", std::string("none"));
    c.scrub = provenance.value("scrub_fd", 0.0);
    c.scrub_min_length = provenance.value("scrub_min_length", c.scrub_min_length);
  } else if (lead) {
    runtime::log_line("warning: embed: " + o.checkpoint + "/config.json records no data_provenance (a checkpoint "
                      "from before it, or pre-trained on synthetic windows): the scans get bfm convert's defaults "
                      "(linear detrend, z-score, the scans' own TR)");
  }
#ifdef BFM_WITH_NIFTI
  const int status = convert(c);
  require(status == 0, "embed: converting the scans into ", c.out, " failed (exit status ", status, ")");
  return c.out;
#else
  fail("bfm embed of scans needs the NIfTI converter: this build has none (give --corpus DIR)");
#endif
}

void write_csv(const std::string& path, const std::string& header, const std::vector<std::string>& keys,
               const std::vector<float>& values, int64_t D) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    require(f.good(), path, ": cannot create ", tmp);
    f << header;
    for (int64_t d = 0; d < D; ++d) f << ",e" << d;
    f << "\n";
    f.precision(9);
    for (size_t i = 0; i < keys.size(); ++i) {
      f << keys[i];
      for (int64_t d = 0; d < D; ++d) f << "," << values[i * size_t(D) + size_t(d)];
      f << "\n";
    }
    require(f.good(), path, ": write failed");
  }
  fs::rename(tmp, path);
}

// A CSV field: quoted when it holds a comma, a quote or a line break.
std::string field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

}  // namespace

int embed(const EmbedOptions& o) {
  const int sources = int(!o.corpus.empty()) + int(!o.bids.empty()) + int(!o.scans.empty());
  require(sources == 1, "bfm embed: give one of --corpus DIR, --bids DIR or SCAN.nii.gz ... (", sources, " given)");
  require(o.corpus.empty() || o.atlas.empty(), "bfm embed: --atlas goes with --bids or scans, not with --corpus");
  require(!o.atlas.empty() || !o.corpus.empty(), "bfm embed: --bids and scans need --atlas (the checkpoint's atlas)");
  require(o.stride >= 0, "bfm embed: --stride must not be negative");
  auto comm = runtime::make_communicator("auto", false);
  const bool lead = comm->rank() == 0;
  const Stopwatch clock;

  const std::unique_ptr<model::BrainModel> released = model::load_released_checkpoint(o.checkpoint);
  const model::ModelConfig& c = released->config();
  const nlohmann::json checkpoint_provenance =
      c.data_provenance.empty() ? nlohmann::json::object() : nlohmann::json::parse(c.data_provenance);
  if (lead) fs::create_directories(o.out);
  comm->barrier();
  const std::string corpus_dir = o.corpus.empty() ? convert_scans(o, checkpoint_provenance, lead) : o.corpus;

  // ---- the corpus, checked against the checkpoint
  const io::CorpusManifest manifest = io::read_corpus_manifest(corpus_dir);
  std::vector<CorpusRun> runs;
  nlohmann::json provenance;
  {
    io::Corpus corpus(corpus_dir, manifest.shard_files);
    provenance = corpus_provenance(corpus);
    for (int64_t s = 0; s < corpus.n_shards(); ++s) {
      const io::ShardReader& shard = corpus.shard(s);
      require(shard.n_parcels() == c.n_parcels, shard.path(), ": ", shard.n_parcels(), " parcels, but the model of ",
              o.checkpoint, " takes ", c.n_parcels, " (another atlas?)");
      for (int64_t r = 0; r < int64_t(shard.runs().size()); ++r) runs.push_back({s, r, shard.runs()[size_t(r)]});
    }
  }
  for (const std::string& warning : check_provenance(checkpoint_provenance, o.checkpoint, provenance, corpus_dir))
    if (lead) runtime::log_line("warning: " + warning);

  // ---- the windows
  const int64_t T = c.window, P = c.n_parcels, D = c.d_model;
  const int64_t stride = o.stride > 0 ? o.stride : T;
  std::vector<Window> windows;
  int64_t short_runs = 0;
  for (int64_t g = 0; g < int64_t(runs.size()); ++g) {
    if (runs[size_t(g)].meta.length < T) ++short_runs;
    for (int64_t start = 0; start + T <= runs[size_t(g)].meta.length; start += stride) windows.push_back({g, start});
  }
  if (lead && short_runs > 0)
    runtime::log_line("embed: " + std::to_string(short_runs) + " run(s) shorter than the model's window of " +
                      std::to_string(T) + " time points give no window");
  require(!windows.empty(), corpus_dir, ": no run has a whole window of ", T, " time points");

  // ---- the embeddings: windows round robin over the ranks, summed to every rank
  const model::Placement placement = model::choose_placement(c, o.device, model::Precision::fp32, "bfm embed --device");
  const std::unique_ptr<model::BrainModel> encoder = model::make_model(c, placement);
  encoder->load_params(released->params_copy().data());
  const int batch = o.batch > 0 ? o.batch
                    : placement.gpu ? int(std::clamp<int64_t>(32768 / std::max<int64_t>(1, c.n_tokens()), 1, 256))
                                    : 32;
  if (lead)
    runtime::log_line("embed: " + std::to_string(windows.size()) + " windows of " + std::to_string(T) +
                      " time points (stride " + std::to_string(stride) + ") from " + std::to_string(runs.size()) +
                      " runs of " + corpus_dir + " on " + std::to_string(comm->size()) + " rank(s), " +
                      placement.describe());
  std::vector<float> embedding(windows.size() * size_t(D), 0.0f);
  {
    io::Corpus corpus(corpus_dir, manifest.shard_files);
    std::vector<size_t> mine;
    for (size_t w = size_t(comm->rank()); w < windows.size(); w += size_t(comm->size())) mine.push_back(w);
    std::vector<float> x(size_t(batch) * size_t(T * P));
    Stopwatch progress;
    for (size_t first = 0; first < mine.size(); first += size_t(batch)) {
      const size_t b = std::min<size_t>(size_t(batch), mine.size() - first);
      for (size_t i = 0; i < b; ++i) {
        const Window& w = windows[mine[first + i]];
        const CorpusRun& run = runs[size_t(w.run)];
        const io::ShardReader& shard = corpus.shard(run.shard);
        float* rows = &x[i * size_t(T * P)];
        shard.read_window(run.local, w.start, T, rows);
        for (int64_t k = 0; k < T * P; ++k)
          require(std::isfinite(rows[k]), shard.path(), ": run ", run.local, " (", run.meta.subject, ") holds a ",
                  "non-finite value at time point ", w.start + k / P, ", parcel ", k % P);
      }
      model::Batch in;
      in.size = int(b);
      in.x = x.data();
      in.encoder_only = true;
      encoder->forward(in, corpus_dir + " windows");
      const std::vector<float> pooled = encoder->pooled();  // [b, D]
      for (size_t i = 0; i < b; ++i)
        std::copy_n(&pooled[i * size_t(D)], D, &embedding[mine[first + i] * size_t(D)]);
      if (lead && progress.seconds() > 10) {
        const double done = double(first + b) / double(mine.size());
        runtime::log_line("embed: rank 0 " + std::to_string(first + b) + "/" + std::to_string(mine.size()) +
                          " windows, " + runtime::format_duration(clock.seconds()) + ", ETA " +
                          runtime::format_duration(clock.seconds() * (1 - done) / std::max(done, 1e-9)));
        progress.restart();
      }
    }
  }
  if (comm->size() > 1) comm->allreduce_sum(embedding.data(), int64_t(embedding.size()));
  if (!lead) return 0;

  // ---- per subject: the mean of its windows (subjects in the order of their first run)
  std::vector<std::string> subject_ids;
  std::map<std::string, int64_t> subject_index;
  for (const CorpusRun& run : runs)
    if (subject_index.emplace(run.meta.subject, int64_t(subject_ids.size())).second)
      subject_ids.push_back(run.meta.subject);
  const auto S = int64_t(subject_ids.size());
  std::vector<double> sums(size_t(S * D), 0.0);
  std::vector<int64_t> counts(static_cast<size_t>(S), 0);
  for (size_t w = 0; w < windows.size(); ++w) {
    const int64_t s = subject_index[runs[size_t(windows[w].run)].meta.subject];
    ++counts[size_t(s)];
    for (int64_t d = 0; d < D; ++d) sums[size_t(s * D + d)] += embedding[w * size_t(D) + size_t(d)];
  }
  std::vector<float> subject_mean(size_t(S * D), 0.0f);
  for (int64_t s = 0; s < S; ++s)
    for (int64_t d = 0; d < D && counts[size_t(s)] > 0; ++d)
      subject_mean[size_t(s * D + d)] = float(sums[size_t(s * D + d)] / double(counts[size_t(s)]));

  // ---- OUT/embeddings.h5 (and the CSVs)
  const auto W = int64_t(windows.size()), R = int64_t(runs.size());
  std::vector<int64_t> window_run(static_cast<size_t>(W)), window_start(static_cast<size_t>(W)),
      run_length(static_cast<size_t>(R));
  std::vector<double> window_seconds(static_cast<size_t>(W)), run_tr(static_cast<size_t>(R));
  std::vector<std::string> run_subject, run_study, run_task, run_source;
  for (int64_t w = 0; w < W; ++w) {
    window_run[size_t(w)] = windows[size_t(w)].run;
    window_start[size_t(w)] = windows[size_t(w)].start;
    window_seconds[size_t(w)] = double(windows[size_t(w)].start) * runs[size_t(windows[size_t(w)].run)].meta.tr;
  }
  for (int64_t r = 0; r < R; ++r) {
    const io::Run& m = runs[size_t(r)].meta;
    run_length[size_t(r)] = m.length;
    run_tr[size_t(r)] = m.tr;
    run_subject.push_back(m.subject);
    run_study.push_back(m.study);
    run_task.push_back(m.task);
    run_source.push_back(m.source);
  }
  const std::string h5_path = (fs::path(o.out) / "embeddings.h5").string();
  io::H5ArrayWriter h5(h5_path);
  h5.write_f32("/windows/embedding", {W, D}, embedding.data());
  h5.write_i64("/windows/run", {W}, window_run.data());
  h5.write_i64("/windows/start", {W}, window_start.data());
  h5.write_f64("/windows/start_s", {W}, window_seconds.data());
  h5.write_strings("/runs/subject", run_subject);
  h5.write_strings("/runs/study", run_study);
  h5.write_strings("/runs/task", run_task);
  h5.write_strings("/runs/source", run_source);
  h5.write_f64("/runs/tr", {R}, run_tr.data());
  h5.write_i64("/runs/length", {R}, run_length.data());
  h5.write_strings("/subjects/id", subject_ids);
  h5.write_f32("/subjects/embedding", {S, D}, subject_mean.data());
  h5.write_i64("/subjects/windows", {S}, counts.data());
  h5.commit();
  std::string written = h5_path;
  if (o.csv) {
    std::vector<std::string> window_keys, subject_keys;
    for (int64_t w = 0; w < W; ++w) {
      const io::Run& m = runs[size_t(window_run[size_t(w)])].meta;
      std::ostringstream key;
      key.precision(9);
      key << field(m.subject) << "," << window_run[size_t(w)] << "," << field(m.source) << ","
          << window_start[size_t(w)] << "," << window_seconds[size_t(w)];
      window_keys.push_back(key.str());
    }
    for (int64_t s = 0; s < S; ++s)
      subject_keys.push_back(field(subject_ids[size_t(s)]) + "," + std::to_string(counts[size_t(s)]));
    write_csv((fs::path(o.out) / "windows.csv").string(), "subject,run,source,start,start_s", window_keys, embedding,
              D);
    write_csv((fs::path(o.out) / "subjects.csv").string(), "subject,windows", subject_keys, subject_mean, D);
    written += ", windows.csv, subjects.csv";
  }
  runtime::log_line("embed: " + std::to_string(W) + " window and " + std::to_string(S) + " subject embeddings of " +
                    std::to_string(D) + " dimensions in " + runtime::format_duration(clock.seconds()) + ": " +
                    written);
  return 0;
}

#endif  // BFM_WITH_HDF5

}  // namespace bfm::launch
