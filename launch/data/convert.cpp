#include "launch/data/convert.h"

#if defined(BFM_WITH_HDF5) && defined(BFM_WITH_NIFTI)

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <system_error>

#include "io/bids.h"
#include "io/confounds.h"
#include "io/corpus_manifest.h"
#include "io/parcellate.h"
#include "io/sha256.h"
#include "io/shard_reader.h"
#include "io/shard_writer.h"
#include "launch/data/study_tables.h"
#include "runtime/progress.h"
#include "runtime/world.h"

#include "base/error.h"

namespace bfm::launch {

namespace {

namespace fs = std::filesystem;




std::string preprocessing_text(const ConvertOptions& o) {
  std::ostringstream os;
  os << "parcel means of the scan's voxels (nearest atlas voxel through both affines), non-finite values left out; "
     << (o.no_detrend ? "" : "linear detrend; ");
  const std::vector<std::string> confounds = io::confound_columns(o.confounds);
  if (o.scrub > 0)
    os << "scrubbing: volumes with framewise_displacement > " << o.scrub << " dropped (not interpolated, left out of "
       << "the fit, with their labels), runs left under " << o.scrub_min_length << " volumes skipped; ";
  if (!confounds.empty()) {
    os << "confounds " << o.confounds << " (";
    for (size_t i = 0; i < confounds.size(); ++i) os << (i ? ", " : "") << confounds[i];
    os << ") regressed out with the constant" << (o.no_detrend ? "" : " and the line") << " in one least squares; ";
  }
  if (o.target_tr > 0) os << "linear resampling to TR " << o.target_tr << " s; ";
  os << "scaling " << o.scaling << " per parcel";
  return os.str();
}

// The same, for programs (docs/FORMAT.md, `preprocessing_options`): what bfm embed repeats on a new scan.
nlohmann::json preprocessing_options(const ConvertOptions& o) {
  return {{"detrend", !o.no_detrend},
          {"scaling", o.scaling},
          {"target_tr", o.target_tr},
          {"confounds", o.confounds},
          {"confound_columns", io::confound_columns(o.confounds)},
          {"scrub_fd", o.scrub},
          {"scrub_min_length", o.scrub_min_length}};
}

// Whether `path` is a finished shard of this conversion (its header's atlas, preprocessing, label names and stimuli
// and its run count are this conversion's): false when there is no such file, or (with remove_unreadable) an
// unreadable one, which is removed; throws when it is from another conversion.
bool finished_shard(const std::string& path, const io::ShardHeader& header, int64_t expected_runs,
                    bool remove_unreadable) {
  if (!fs::exists(path)) return false;
  std::unique_ptr<io::ShardReader> done;
  try {
    done = std::make_unique<io::ShardReader>(path);
  } catch (const Error& e) {
    if (!remove_unreadable) fail(path, ": unreadable (", e.what(), "); convert its part again");
    runtime::log_line(std::string("convert: rewriting an unreadable shard: ") + e.what());
    fs::remove(path);
    return false;
  }
  const io::ShardHeader& h = done->header();
  require(h.atlas == header.atlas && h.atlas_sha256 == header.atlas_sha256 && h.preprocessing == header.preprocessing && h.label_names == header.label_names &&
              h.stimulus_ids == header.stimulus_ids && static_cast<int64_t>(done->runs().size()) == expected_runs,
          path, ": exists from another conversion (other atlas, options or scans); pass --overwrite");
  return true;
}

// manifest.json from every shard's tables (rank 0, once every shard is written).
void write_corpus_manifest(const ConvertOptions& o, size_t n_shards) {
  std::vector<io::ShardSummary> summaries;
  io::CorpusAnnotations annotations;
  for (size_t i = 0; i < n_shards; ++i) {
    const io::ShardReader shard((fs::path(o.out) / io::shard_file_name(i)).string());
    summaries.push_back(io::summarize(shard));
    if (i == 0) {  // every shard of a conversion has the same label names and stimuli (finished_shard checks it)
      annotations.label_names = shard.header().label_names;
      annotations.stimuli = static_cast<int64_t>(shard.header().stimulus_ids.size());
      annotations.stimulus_dim = shard.header().stimulus_dim;
    }
  }
  io::write_manifest(o.out, summaries, o.split_seed, {o.train_fraction, o.validation_fraction}, annotations);
}

}  // namespace

int convert(const ConvertOptions& o) {
  const auto& w = runtime::world();
  require(o.part.empty() || !o.manifest_only, "--part and --manifest-only exclude each other: the parts convert "
          "the shards, --manifest-only (run once after them) writes the manifest");
  require(!(o.manifest_only && o.overwrite), "--manifest-only and --overwrite exclude each other: --manifest-only "
          "only reads the shards the parts wrote");
  const io::ShardPart part = o.part.empty() ? io::ShardPart{} : io::parse_shard_part(o.part);
  require(!o.bids.empty() != !o.scans.empty(), "bfm convert: give either --bids DIR or scan files, not both");
  require(o.subjects_per_shard > 0, "--subjects-per-shard must be > 0");
  require(fs::is_regular_file(o.atlas), o.atlas, ": no such atlas file");
  std::string label_list;
  const std::map<int64_t, std::string> label_names = io::atlas_label_names(o.atlas, label_list);
  if (w.rank == 0 && !label_list.empty())
    runtime::log_line("convert: parcel names from " + label_list + " (" + std::to_string(label_names.size()) +
                      " labels)");
  io::ParcellateOptions popt;
  popt.preprocess.detrend = !o.no_detrend;
  popt.preprocess.target_tr = o.target_tr;
  popt.preprocess.scaling = o.scaling == "robust" ? io::RunScaling::robust
                            : o.scaling == "none" ? io::RunScaling::none
                                                  : io::RunScaling::zscore;

  // Every rank finds the same scans (a sorted walk), so no exchange is needed.
  std::vector<io::BidsScan> scans;
  if (!o.bids.empty()) {
    const fs::path root = fs::weakly_canonical(o.bids);
    scans = io::find_bids_scans(root, o.study.empty() ? root.filename().string() : o.study);
  } else {
    for (const auto& s : o.scans) {
      require(fs::is_regular_file(s), s, ": no such scan file");
      const fs::path p = fs::absolute(s);
      scans.push_back(io::make_scan(p, io::parse_bids_name(p.filename().string()), o.study.empty() ? "scans" : o.study,
                                {p.parent_path()}));
    }
  }
  // fMRIPrep's confounds of every run, checked before anything is written; the runs scrubbing leaves too short are
  // left out here, so that every rank and part shards the same runs.
  const std::vector<std::string> confound_names = io::confound_columns(o.confounds);
  require(!(o.scrub > 0 && o.target_tr > 0), "--scrub and --target-tr exclude each other: a scrubbed run has no "
          "regular time grid to resample; convert without --target-tr");
  std::map<std::string, std::string> confounds_file;  // scan path -> its confounds TSV
  if (!confound_names.empty() || o.scrub > 0) {
    std::vector<io::BidsScan> long_enough;
    for (auto& scan : scans) {
      const std::string file = io::find_confounds_file(scan.path);
      require(!file.empty(), scan.path, ": no *_desc-confounds_timeseries.tsv (or _regressors.tsv) with its "
              "entities beside it, needed by ", confound_names.empty() ? "--scrub" : "--confounds " + o.confounds);
      const io::RunConfounds c =
          io::read_run_confounds(file, confound_names, io::scan_timing(scan.path, scan.tr).n_time, o.scrub);
      if (o.scrub > 0 && c.kept < o.scrub_min_length) {
        if (w.rank == 0)
          runtime::log_line("note: convert: " + scan.path + " skipped: " + std::to_string(c.kept) + " volumes left "
                            "after --scrub " + (std::ostringstream() << o.scrub).str() + ", fewer than " +
                            std::to_string(o.scrub_min_length) + " (--scrub-min-length)");
        continue;
      }
      confounds_file.emplace(scan.path, file);
      long_enough.push_back(std::move(scan));
    }
    require(!long_enough.empty(), "bfm convert: every run has fewer than ", o.scrub_min_length,
            " volumes left after --scrub ", o.scrub);
    scans = std::move(long_enough);
  }
  // The study's events, stimuli and participants, checked before anything is written (a bad one stops here).
  const StudyTables tables = read_study_tables(o, scans);
  if (w.rank == 0)
    for (const auto& warning : tables.warnings) runtime::log_line("warning: convert: " + warning);
  std::map<std::string, std::vector<const io::BidsScan*>> by_subject;
  for (const auto& s : scans) by_subject[s.subject].push_back(&s);
  std::vector<std::vector<std::string>> shards;  // subject ids per shard
  for (const auto& [id, runs] : by_subject) {
    if (shards.empty() || static_cast<int>(shards.back().size()) == o.subjects_per_shard) shards.emplace_back();
    shards.back().push_back(id);
  }

  io::ShardHeader header;
  header.atlas = io::strip_extension(fs::path(o.atlas).filename().string());
  header.converter = std::string("bfm convert ") + BFM_VERSION;
  header.preprocessing = preprocessing_text(o);
  header.preprocessing_options = preprocessing_options(o).dump();
  header.atlas_sha256 = io::file_sha256(o.atlas);
  header.chunk_rows = o.chunk_rows;
  if (tables.annotated()) header.preprocessing += "; " + tables.description;
  header.labels = !tables.label_names.empty();
  header.label_names = tables.label_names;
  header.stimulus_ids = tables.stimulus_ids;
  header.stimulus_dim = tables.stimulus_dim;
  header.stimulus_features = tables.stimulus_features;
  header.score_names = tables.score_names;
  const auto runs_of = [&](size_t i) {
    int64_t n = 0;
    for (const auto& id : shards[i]) n += static_cast<int64_t>(by_subject[id].size());
    return n;
  };

  if (o.manifest_only) {  // the merge step after the parts: every shard there and this conversion's
    if (w.rank == 0) {
      require(fs::is_directory(o.out), o.out, ": no such corpus folder (run the bfm convert --part I/N jobs first)");
      std::vector<int64_t> missing;
      for (size_t i = 0; i < shards.size(); ++i)
        if (!finished_shard((fs::path(o.out) / io::shard_file_name(static_cast<int64_t>(i))).string(), header,
                            runs_of(i), false))
          missing.push_back(static_cast<int64_t>(i));
      require(missing.empty(), o.out, ": missing ", io::shard_list(missing, static_cast<int64_t>(shards.size())),
              "; run the parts that convert them (bfm convert --part I/N, shard i is part i % N) and then this again");
      Stopwatch clock;
      write_corpus_manifest(o, shards.size());
      runtime::log_line("convert: " + std::to_string(scans.size()) + " runs of " + std::to_string(by_subject.size()) +
                        " subjects in " + std::to_string(shards.size()) + " shards checked, " +
                        runtime::format_duration(clock.seconds()) + "; wrote " +
                        (fs::path(o.out) / "manifest.json").string());
    }
#ifdef BFM_WITH_MPI
    if (w.size > 1) MPI_Barrier(w.comm);
#endif
    return 0;
  }

  if (w.rank == 0) {
    fs::create_directories(o.out);
    // --overwrite starts afresh: the whole corpus, or with --part this part's shards (the other parts' are theirs).
    if (o.overwrite)
      for (const auto& e : fs::directory_iterator(o.out)) {
        const std::string name = e.path().filename().string();
        bool ours = name.starts_with("manifest.json");
        if (name.starts_with("shard-") && (name.ends_with(".h5") || name.ends_with(".h5.tmp"))) {
          const std::string digits = name.substr(6, name.find('.') - 6);
          ours = part.whole() || (!digits.empty() && digits.find_first_not_of("0123456789") == std::string::npos &&
                                  part.owns(std::stoll(digits)));
        }
        std::error_code ec;  // other parts may remove manifest.json at the same time
        if (ours) fs::remove(e.path(), ec);
      }
    runtime::log_line("convert: " + std::to_string(scans.size()) + " runs of " + std::to_string(by_subject.size()) +
                      " subjects -> " + std::to_string(shards.size()) + " shards in " + o.out +
                      (part.whole() ? std::string()
                                    : ", part " + part.text() + " (the shards i with i % " +
                                          std::to_string(part.count) + " == " + std::to_string(part.index) + ")") +
                      " on " + std::to_string(w.size) + " rank(s)");
  }
#ifdef BFM_WITH_MPI
  if (w.size > 1) MPI_Barrier(w.comm);
#endif

  Stopwatch clock;
  int64_t done_runs = 0, skipped = 0;
  const std::vector<int64_t> mine = io::shards_for(static_cast<int64_t>(shards.size()), part, w.rank, w.size);
  int64_t my_runs = 0;
  for (const int64_t i : mine) my_runs += runs_of(static_cast<size_t>(i));
  for (const int64_t shard : mine) {
    const size_t i = static_cast<size_t>(shard);
    const std::string path = (fs::path(o.out) / io::shard_file_name(shard)).string();
    const int64_t expected_runs = runs_of(i);
    if (finished_shard(path, header, expected_runs, true)) {
      done_runs += expected_runs;
      ++skipped;
      continue;
    }
    std::unique_ptr<io::ShardWriter> writer;
    for (const auto& id : shards[i])
      for (const io::BidsScan* scan : by_subject[id]) {
        popt.tr = scan->tr;
        io::RunConfounds confounds;
        if (const auto file = confounds_file.find(scan->path); file != confounds_file.end())
          confounds = io::read_run_confounds(file->second, confound_names,
                                             io::scan_timing(scan->path, scan->tr).n_time, o.scrub);
        popt.preprocess.confounds = confounds.values;
        popt.preprocess.n_confounds = confounds.n_columns;
        popt.preprocess.keep = confounds.keep;
        const io::ParcelSeries x = io::parcellate(scan->path, o.atlas, popt);
        const int64_t P = static_cast<int64_t>(x.labels.size());
        if (!writer) {
          header.n_parcels = P;
          header.parcel_labels.clear();
          for (int64_t label : x.labels) {
            const auto named = label_names.find(label);
            header.parcel_labels.push_back(named != label_names.end() ? named->second
                                                                      : "label-" + std::to_string(label));
          }
          writer = std::make_unique<io::ShardWriter>(path, header);
          for (const auto& subject_id : shards[i])
            if (const auto traits = tables.subjects.find(subject_id); traits != tables.subjects.end())
              writer->add_subject(traits->second);
        }
        require(P == header.n_parcels, scan->path, ": ", P, " parcels, but other runs have ", header.n_parcels);
        if (!x.empty_labels.empty()) {
          std::string labels;
          for (size_t k = 0; k < x.empty_labels.size(); ++k)
            labels += (k ? ", " : "") + std::to_string(x.empty_labels[k]);
          runtime::log_line("warning: " + scan->path + ": " + std::to_string(x.empty_labels.size()) + " of " +
                            std::to_string(P) + " parcels have no voxels in this scan (labels " + labels +
                            "); their columns are zeros");
        }
        int64_t nonfinite = 0;
        for (int64_t n : x.nonfinite_values) nonfinite += n;
        if (nonfinite > 0)
          runtime::log_line("warning: " + scan->path + ": " + std::to_string(nonfinite) +
                            " NaN or infinite voxel values left out of the parcel means");
        io::RunView run;
        run.meta.subject = scan->subject;
        run.meta.session = scan->session;
        run.meta.study = scan->study;
        run.meta.task = scan->task;
        run.meta.source = scan->path;
        run.meta.tr = x.tr;
        run.meta.length = x.n_time;
        run.timeseries = x.series.data();
        RunAnnotations annotations;
        if (confounds.keep.empty()) {
          annotations = annotate_run(tables, *scan, x.n_time, x.tr);
        } else {  // on the scan's own grid, then the kept volumes' rows: each label stays with its volume
          const RunAnnotations all =
              annotate_run(tables, *scan, static_cast<int64_t>(confounds.keep.size()), x.source_tr);
          const auto S = static_cast<size_t>(header.stimulus_dim);
          for (size_t t = 0; t < confounds.keep.size(); ++t) {
            if (!confounds.keep[t]) continue;
            annotations.label.push_back(all.label[t]);
            annotations.stimulus.push_back(all.stimulus[t]);
            annotations.embedding.insert(annotations.embedding.end(), all.embedding.begin() + t * S,
                                         all.embedding.begin() + (t + 1) * S);
          }
        }
        if (header.labels) run.labels = annotations.label.data();
        if (!header.stimulus_ids.empty()) run.stimulus = annotations.stimulus.data();
        if (header.stimulus_dim > 0) run.stim_embedding = annotations.embedding.data();
        writer->add_run(run);
        ++done_runs;
        if (w.rank == 0)
          runtime::log_line("convert: rank 0 " + std::to_string(done_runs) + "/" + std::to_string(my_runs) +
                            " runs, " + fs::path(scan->path).filename().string() + " (" + std::to_string(x.n_time) +
                            " TRs of " + (std::ostringstream() << x.tr).str() + " s" +
                            (scan->tr_source.empty() ? ", TR from the header" : "") + "), " +
                            runtime::format_duration(clock.seconds()));
      }
    writer->commit();
  }
  if (w.rank == 0 && skipped > 0)
    runtime::log_line("convert: rank 0 resumed: " + std::to_string(skipped) + " shard(s) already complete, skipped");
#ifdef BFM_WITH_MPI
  if (w.size > 1) MPI_Barrier(w.comm);
#endif
  if (w.rank == 0 && !part.whole()) {
    int64_t n = 0;
    for (size_t i = static_cast<size_t>(part.index); i < shards.size(); i += static_cast<size_t>(part.count)) ++n;
    runtime::log_line("convert: part " + part.text() + ": " + std::to_string(n) + " shard(s) done, " +
                      runtime::format_duration(clock.seconds()) + "; once every part is done, bfm convert "
                      "--manifest-only with the same options writes manifest.json");
  } else if (w.rank == 0) {
    write_corpus_manifest(o, shards.size());
    runtime::log_line("convert: " + std::to_string(scans.size()) + " runs of " + std::to_string(by_subject.size()) +
                      " subjects in " + std::to_string(shards.size()) + " shards, " +
                      runtime::format_duration(clock.seconds()) + "; wrote " +
                      (fs::path(o.out) / "manifest.json").string());
  }
  return 0;
}


}  // namespace bfm::launch

#endif  // BFM_WITH_HDF5 && BFM_WITH_NIFTI
