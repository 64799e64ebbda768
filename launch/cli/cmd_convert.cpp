// bfm convert (--bids DIR | SCAN.nii.gz ...) --atlas ATLAS.nii.gz --out DIR: real scans into a corpus.
//
// Finding scans. BIDS: DIR/sub-*/[ses-*/]func/*_bold.nii[.gz], and fMRIPrep derivatives anywhere under
// DIR/derivatives (.../sub-*/[ses-*/]func/*_desc-preproc_bold.nii[.gz]); a run that has a derivative is converted
// from it (among several, the MNI space first), otherwise from the raw scan. Subject, session and task come from the
// file's entities. TR: RepetitionTime of the JSON sidecars by BIDS inheritance (the scan's folder up to the dataset
// root, the raw scan's folders for a derivative; deeper and more specific wins), else the NIfTI header.
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
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "launch/cli/commands.h"
#include "base/error.h"

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

#include "io/corpus_manifest.h"
#include "io/parcellate.h"
#include "io/shard_reader.h"
#include "io/shard_writer.h"
#include "runtime/progress.h"
#include "runtime/world.h"
#endif

namespace bfm::launch {

#if defined(BFM_WITH_HDF5) && defined(BFM_WITH_NIFTI)
namespace {

namespace fs = std::filesystem;

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
};

// A BIDS file name split into its entities (key-value pairs) and suffix: sub-01_task-rest_bold.nii.gz ->
// {sub: 01, task: rest}, "bold". A name without entities ("scan1.nii.gz") is all suffix.
struct BidsName {
  std::map<std::string, std::string> entities;
  std::string suffix;
};

std::string strip_extension(std::string name) {
  for (const char* ext : {".nii.gz", ".nii", ".json"})
    if (name.size() > std::strlen(ext) && name.compare(name.size() - std::strlen(ext), std::string::npos, ext) == 0)
      return name.substr(0, name.size() - std::strlen(ext));
  return name;
}

BidsName parse_name(const std::string& file_name) {
  BidsName b;
  const std::string stem = strip_extension(file_name);
  std::vector<std::string> parts;
  std::stringstream ss(stem);
  for (std::string p; std::getline(ss, p, '_');) parts.push_back(p);
  for (size_t i = 0; i < parts.size(); ++i) {
    const auto dash = parts[i].find('-');
    if (i + 1 < parts.size() && dash != std::string::npos && dash > 0)
      b.entities[parts[i].substr(0, dash)] = parts[i].substr(dash + 1);
    else
      b.suffix += (b.suffix.empty() ? "" : "_") + parts[i];
  }
  return b;
}

bool is_nifti(const std::string& name) {
  return name.ends_with(".nii") || name.ends_with(".nii.gz");
}

struct Scan {
  std::string path, subject, session, task, study;
  double tr = 0;            // from a sidecar; 0 = take the header's
  std::string tr_source;    // the sidecar it came from
};

// RepetitionTime by BIDS inheritance: `dirs` from the deepest to the shallowest; in each, the *.json files with the
// scan's suffix whose entities are a subset of the scan's, the most specific first.
double sidecar_tr(const BidsName& scan, const std::vector<fs::path>& dirs, std::string& source) {
  for (const auto& dir : dirs) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    std::vector<std::pair<size_t, fs::path>> candidates;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const std::string name = e.path().filename().string();
      if (!e.is_regular_file() || !name.ends_with(".json")) continue;
      const BidsName j = parse_name(name);
      if (j.suffix != scan.suffix) continue;
      const bool subset = std::all_of(j.entities.begin(), j.entities.end(), [&](const auto& kv) {
        const auto it = scan.entities.find(kv.first);
        return it != scan.entities.end() && it->second == kv.second;
      });
      if (subset) candidates.emplace_back(j.entities.size(), e.path());
    }
    std::sort(candidates.begin(), candidates.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    for (const auto& [n, path] : candidates) {
      std::ifstream in(path);
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(in);
      } catch (const nlohmann::json::exception& e) {
        fail(path.string(), ": not valid JSON: ", e.what());
      }
      if (!j.contains("RepetitionTime")) continue;
      require(j["RepetitionTime"].is_number() && j["RepetitionTime"].get<double>() > 0, path.string(),
              ": RepetitionTime is ", j["RepetitionTime"].dump(), ", expected a positive number of seconds");
      source = path.string();
      return j["RepetitionTime"].get<double>();
    }
  }
  return 0;
}

// The folders from `file`'s up to and including `root`, deepest first.
std::vector<fs::path> folders_up_to(const fs::path& file, const fs::path& root) {
  std::vector<fs::path> dirs;
  for (fs::path d = file.parent_path(); !d.empty(); d = d.parent_path()) {
    dirs.push_back(d);
    if (d == root || d == d.parent_path()) break;
  }
  return dirs;
}

Scan make_scan(const fs::path& path, const BidsName& name, const std::string& study, std::vector<fs::path> dirs) {
  Scan s;
  s.path = path.string();
  s.study = study;
  const auto get = [&](const char* key) {
    const auto it = name.entities.find(key);
    return it == name.entities.end() ? std::string() : it->second;
  };
  const std::string sub = get("sub");
  s.subject = study + "/" + (sub.empty() ? strip_extension(path.filename().string()) : "sub-" + sub);
  s.session = get("ses");
  s.task = get("task");
  s.tr = sidecar_tr(name, dirs, s.tr_source);
  return s;
}

std::vector<Scan> find_bids_scans(const fs::path& root, const std::string& study) {
  require(fs::is_directory(root), root.string(), ": no such BIDS folder");
  // Runs keyed by their entities without the derivative ones (space, desc, res, den): raw and derivative meet.
  struct Candidate {
    fs::path path;
    BidsName name;
    int rank;  // lower is preferred: 0 MNI-space derivative, 1 other derivative, 2 raw
  };
  std::map<std::string, Candidate> runs;
  const auto consider = [&](const fs::path& p) {
    const std::string file = p.filename().string();
    if (!is_nifti(file)) return;
    BidsName n = parse_name(file);
    if (n.suffix != "bold" || !n.entities.count("sub")) return;
    const bool derivative = n.entities.count("desc");
    if (derivative && n.entities.at("desc") != "preproc") return;
    const int rank = !derivative ? 2 : (n.entities.count("space") && n.entities.at("space").find("MNI") == 0 ? 0 : 1);
    std::string key;
    for (const auto& [k, v] : n.entities)
      if (k != "space" && k != "desc" && k != "res" && k != "den") key += k + "-" + v + "_";
    auto it = runs.find(key);
    if (it == runs.end() || rank < it->second.rank || (rank == it->second.rank && p < it->second.path))
      runs[key] = Candidate{p, n, rank};
  };
  std::error_code ec;
  const auto scan_func_dirs = [&](const fs::path& dataset) {
    for (const auto& sub : fs::directory_iterator(dataset, ec)) {
      if (!sub.is_directory() || !sub.path().filename().string().starts_with("sub-")) continue;
      std::vector<fs::path> funcs{sub.path() / "func"};
      for (const auto& ses : fs::directory_iterator(sub.path(), ec))
        if (ses.is_directory() && ses.path().filename().string().starts_with("ses-"))
          funcs.push_back(ses.path() / "func");
      for (const auto& func : funcs)
        if (fs::is_directory(func))
          for (const auto& f : fs::directory_iterator(func, ec))
            if (f.is_regular_file()) consider(f.path());
    }
  };
  scan_func_dirs(root);
  if (fs::is_directory(root / "derivatives"))
    for (auto it = fs::recursive_directory_iterator(root / "derivatives", ec); it != fs::end(it); ++it)
      if (it->is_regular_file() && it->path().parent_path().filename() == "func" &&
          it->path().filename().string().find("_desc-preproc_bold.nii") != std::string::npos)
        consider(it->path());
  std::vector<Scan> scans;
  for (const auto& [key, c] : runs) {
    std::vector<fs::path> dirs = folders_up_to(c.path, root);
    // A derivative also inherits from the raw scan's folders: root/sub-X[/ses-Y]/func, then up.
    fs::path raw = root / ("sub-" + c.name.entities.at("sub"));
    if (c.name.entities.count("ses")) raw /= "ses-" + c.name.entities.at("ses");
    for (const auto& d : folders_up_to(raw / "func" / "x", root))
      if (std::find(dirs.begin(), dirs.end(), d) == dirs.end()) dirs.insert(dirs.end() - 1, d);  // root stays last
    scans.push_back(make_scan(c.path, c.name, study, dirs));
  }
  require(!scans.empty(), root.string(), ": no BOLD runs found (sub-*/[ses-*/]func/*_bold.nii[.gz] or ",
          "derivatives/**/func/*_desc-preproc_bold.nii[.gz])");
  return scans;
}

// Parcel names from a label list beside the atlas, as atlases ship them (mricron's aal.nii.txt, FSL-style lists):
// one "index name ..." line per label, looked for as ATLAS.txt, ATLAS-without-.gz.txt and ATLAS-without-.nii.gz.txt.
// Labels without a line (or no list at all) are named "label-<index>".
std::map<int64_t, std::string> atlas_label_names(const std::string& atlas, std::string& source) {
  std::string stem = atlas;
  std::vector<std::string> candidates{atlas + ".txt"};
  for (const char* ext : {".gz", ".nii"})
    if (stem.size() > std::strlen(ext) && stem.compare(stem.size() - std::strlen(ext), std::string::npos, ext) == 0) {
      stem.resize(stem.size() - std::strlen(ext));
      candidates.push_back(stem + ".txt");
    }
  std::map<int64_t, std::string> names;
  for (const auto& path : candidates) {
    std::ifstream in(path);
    if (!in) continue;
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      int64_t index = 0;
      std::string name;
      if (fields >> index >> name) names.emplace(index, name);
    }
    source = path;
    break;
  }
  return names;
}

std::string preprocessing_text(const ConvertOptions& o) {
  std::ostringstream os;
  os << "parcel means of the scan's voxels (nearest atlas voxel through both affines), non-finite values left out; "
     << (o.no_detrend ? "" : "linear detrend; ");
  if (o.target_tr > 0) os << "linear resampling to TR " << o.target_tr << " s; ";
  os << "scaling " << o.scaling << " per parcel";
  return os.str();
}

// Whether `path` is a finished shard of this conversion (its header's atlas and preprocessing and its run count are
// this conversion's): false when there is no such file, or (with remove_unreadable) an unreadable one, which is
// removed; throws when it is from another conversion.
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
  require(done->header().atlas == header.atlas && done->header().preprocessing == header.preprocessing &&
              static_cast<int64_t>(done->runs().size()) == expected_runs,
          path, ": exists from another conversion (other atlas, options or scans); pass --overwrite");
  return true;
}

// manifest.json from every shard's tables (rank 0, once every shard is written).
void write_corpus_manifest(const ConvertOptions& o, size_t n_shards) {
  std::vector<io::ShardSummary> summaries;
  for (size_t i = 0; i < n_shards; ++i)
    summaries.push_back(io::summarize(io::ShardReader((fs::path(o.out) / io::shard_file_name(i)).string())));
  io::write_manifest(o.out, summaries, o.split_seed, {o.train_fraction, o.validation_fraction});
}

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
  const std::map<int64_t, std::string> label_names = atlas_label_names(o.atlas, label_list);
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
  std::vector<Scan> scans;
  if (!o.bids.empty()) {
    const fs::path root = fs::weakly_canonical(o.bids);
    scans = find_bids_scans(root, o.study.empty() ? root.filename().string() : o.study);
  } else {
    for (const auto& s : o.scans) {
      require(fs::is_regular_file(s), s, ": no such scan file");
      const fs::path p = fs::absolute(s);
      scans.push_back(make_scan(p, parse_name(p.filename().string()), o.study.empty() ? "scans" : o.study,
                                {p.parent_path()}));
    }
  }
  std::map<std::string, std::vector<const Scan*>> by_subject;
  for (const auto& s : scans) by_subject[s.subject].push_back(&s);
  std::vector<std::vector<std::string>> shards;  // subject ids per shard
  for (const auto& [id, runs] : by_subject) {
    if (shards.empty() || static_cast<int>(shards.back().size()) == o.subjects_per_shard) shards.emplace_back();
    shards.back().push_back(id);
  }

  io::ShardHeader header;
  header.atlas = strip_extension(fs::path(o.atlas).filename().string());
  header.converter = std::string("bfm convert ") + BFM_VERSION;
  header.preprocessing = preprocessing_text(o);
  header.chunk_rows = o.chunk_rows;
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
      for (const Scan* scan : by_subject[id]) {
        popt.tr = scan->tr;
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

}  // namespace
#endif

Command add_convert_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("convert", "Convert BIDS / NIfTI scans with an atlas into a corpus");
#if defined(BFM_WITH_HDF5) && defined(BFM_WITH_NIFTI)
  auto o = std::make_shared<ConvertOptions>();
  cmd->add_option("scans", o->scans, "4-D NIfTI scans (instead of --bids)");
  cmd->add_option("--bids", o->bids, "BIDS dataset folder (fMRIPrep derivatives under derivatives/ preferred)");
  cmd->add_option("--atlas", o->atlas, "3-D label NIfTI, on any grid")->required();
  cmd->add_option("--out", o->out, "Corpus folder to write")->required();
  cmd->add_option("--target-tr", o->target_tr, "Resample every run in time to this TR (seconds; 0 keeps it)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--scaling", o->scaling, "Per-parcel scaling after detrending")
      ->check(CLI::IsMember({"zscore", "robust", "none"}));
  cmd->add_flag("--no-detrend", o->no_detrend, "Keep the linear trend");
  cmd->add_option("--study", o->study, "Study name (default: the BIDS folder's name, or 'scans')");
  cmd->add_option("--subjects-per-shard", o->subjects_per_shard, "Subjects per shard file");
  cmd->add_option("--chunk-rows", o->chunk_rows,
                  "Time points per HDF5 chunk (smaller: fewer bytes read per random window; larger: bigger reads)")
      ->capture_default_str()->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  cmd->add_option("--split-seed", o->split_seed, "Seed of the subject-level train/validation/test split");
  cmd->add_option("--train-fraction", o->train_fraction, "Fraction of subjects in train");
  cmd->add_option("--validation-fraction", o->validation_fraction, "Fraction of subjects in validation");
  cmd->add_flag("--overwrite", o->overwrite, "Delete the folder's shards and manifest first (default: resume); "
                "with --part, this part's shards");
  cmd->add_option("--part", o->part, "I/N: convert only the shards i with i % N == I and write no manifest (part I "
                  "of N independent jobs, e.g. a Slurm array; then --manifest-only)");
  cmd->add_flag("--manifest-only", o->manifest_only, "Only write manifest.json, once every --part job has written "
                "its shards (same options; names any missing shard)");
  return [o]() -> int { return convert(*o); };
#else
  (void)cmd;
  return []() -> int { fail("bfm convert needs HDF5 and nifti_clib, and this build lacks one of them"); };
#endif
}

}  // namespace bfm::launch
