// BIDS discovery (docs: README "Data", bfm convert --help): the code is moved here from the convert command so that
// the study's other files (events, participants, confounds) can be read beside the scans.
#include "io/bids.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/json_file.h"

namespace bfm::io {

namespace fs = std::filesystem;

std::string strip_extension(std::string name) {
  for (const char* ext : {".nii.gz", ".nii", ".json"})
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
      const BidsName j = parse_bids_name(name);
      if (j.suffix != scan.suffix) continue;
      const bool subset = std::all_of(j.entities.begin(), j.entities.end(), [&](const auto& kv) {
        const auto it = scan.entities.find(kv.first);
        return it != scan.entities.end() && it->second == kv.second;
      });
      if (subset) candidates.emplace_back(j.entities.size(), e.path());
    }
    std::sort(candidates.begin(), candidates.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    for (const auto& [n, path] : candidates) {
      const nlohmann::json j = read_json_file(path.string());
      if (!j.contains("RepetitionTime")) continue;
      require(j["RepetitionTime"].is_number() && j["RepetitionTime"].get<double>() > 0, path.string(),
              ": RepetitionTime is ", j["RepetitionTime"].dump(), ", expected a positive number of seconds");
      source = path.string();
      return j["RepetitionTime"].get<double>();
    }
  }
  return 0;
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
