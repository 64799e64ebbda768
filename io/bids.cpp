// BIDS discovery (docs: README "Data", bfm convert --help): the code is moved here from the convert command so that
// the study's other files (events, participants, confounds) can be read beside the scans.
#include "io/bids.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <system_error>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/json_file.h"

namespace bfm::io {

namespace fs = std::filesystem;

std::string strip_extension(std::string name) {
  for (const char* ext : {".nii.gz", ".nii", ".json", ".tsv"})
    if (name.size() > std::strlen(ext) && name.compare(name.size() - std::strlen(ext), std::string::npos, ext) == 0)
      return name.substr(0, name.size() - std::strlen(ext));
  return name;
}

BidsName parse_bids_name(const std::string& file_name) {
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

std::vector<fs::path> inherited_files(const BidsName& scan, const std::vector<fs::path>& dirs,
                                      const std::string& suffix, const std::string& extension) {
  std::vector<fs::path> found;
  for (const auto& dir : dirs) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    std::vector<std::pair<size_t, fs::path>> candidates;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const std::string name = e.path().filename().string();
      if (!e.is_regular_file() || !name.ends_with(extension)) continue;
      const BidsName j = parse_bids_name(name);
      if (j.suffix != suffix) continue;
      const bool subset = std::all_of(j.entities.begin(), j.entities.end(), [&](const auto& kv) {
        const auto it = scan.entities.find(kv.first);
        return it != scan.entities.end() && it->second == kv.second;
      });
      if (subset) candidates.emplace_back(j.entities.size(), e.path());
    }
    // The most specific first; among equally specific ones, by name (so every rank sees the same order).
    std::sort(candidates.begin(), candidates.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    for (auto& c : candidates) found.push_back(std::move(c.second));
  }
  return found;
}

std::optional<nlohmann::json> sidecar_field(const BidsName& scan, const std::vector<fs::path>& dirs,
                                            const std::string& key, std::string& source) {
  for (const auto& path : inherited_files(scan, dirs, scan.suffix, ".json")) {
    const nlohmann::json j = read_json_file(path.string());
    if (!j.is_object() || !j.contains(key)) continue;
    source = path.string();
    return j[key];
  }
  return std::nullopt;
}

double sidecar_tr(const BidsName& scan, const std::vector<fs::path>& dirs, std::string& source) {
  std::string from;
  const auto tr = sidecar_field(scan, dirs, "RepetitionTime", from);
  if (!tr) return 0;
  require(tr->is_number() && tr->get<double>() > 0, from, ": RepetitionTime is ", tr->dump(),
          ", expected a positive number of seconds");
  source = from;
  return tr->get<double>();
}

double slice_reference(const BidsName& scan, const std::vector<fs::path>& dirs, double tr, std::string& source) {
  std::string from;
  const auto times = sidecar_field(scan, dirs, "SliceTiming", from);
  if (!times) return 0;
  const auto bad = [&](const std::string& why) { fail(from, ": SliceTiming ", why); };
  if (!times->is_array() || times->empty()) bad("is not a list of slice times in seconds");
  std::vector<double> t;
  for (const auto& v : *times) {
    if (!v.is_number() || v.get<double>() < 0) bad("holds " + v.dump() + ", expected times >= 0 s");
    t.push_back(v.get<double>());
  }
  std::sort(t.begin(), t.end());
  if (tr > 0 && t.back() >= tr) bad("holds " + std::to_string(t.back()) + " s, not less than the TR " +
                                    std::to_string(tr) + " s");
  source = from;
  const size_t n = t.size();
  return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

namespace {
// The folders from `file`'s up to and including `root`, deepest first.
std::vector<fs::path> folders_up_to(const fs::path& file, const fs::path& root) {
  std::vector<fs::path> dirs;
  for (fs::path d = file.parent_path(); !d.empty(); d = d.parent_path()) {
    dirs.push_back(d);
    if (d == root || d == d.parent_path()) break;
  }
  return dirs;
}

}  // namespace

BidsScan make_scan(const fs::path& path, const BidsName& name, const std::string& study, std::vector<fs::path> dirs) {
  BidsScan s;
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
  // Only a run with events needs its slice reference (a study whose SliceTiming is off, in ms say, converts as before).
  if (const auto events = inherited_files(name, dirs, "events", ".tsv"); !events.empty()) {
    s.events = events.front().string();
    s.slice_reference = slice_reference(name, dirs, s.tr, s.slice_source);
  }
  return s;
}

std::vector<BidsScan> find_bids_scans(const fs::path& root, const std::string& study) {
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
    BidsName n = parse_bids_name(file);
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
  std::vector<BidsScan> scans;
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

}  // namespace bfm::io
