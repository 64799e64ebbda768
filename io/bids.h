// Finding a study's scans (bfm convert). BIDS: DIR/sub-*/[ses-*/]func/*_bold.nii[.gz], and fMRIPrep derivatives
// anywhere under DIR/derivatives (.../sub-*/[ses-*/]func/*_desc-preproc_bold.nii[.gz]); a run that has a derivative
// is converted from it (among several, the MNI space first), otherwise from the raw scan. Subject, session and task
// come from the file's entities. TR: RepetitionTime of the JSON sidecars by BIDS inheritance (the scan's folder up to
// the dataset root, the raw scan's folders for a derivative; deeper and more specific wins), else (0 here) the NIfTI
// header's. The run's events (*_events.tsv) and SliceTiming are found by the same inheritance. Filesystem and JSON
// only: no NIfTI library needed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace bfm::io {

// A BIDS file name split into its entities (key-value pairs) and suffix: sub-01_task-rest_bold.nii.gz ->
// {sub: 01, task: rest}, "bold". A name without entities ("scan1.nii.gz") is all suffix.
struct BidsName {
  std::map<std::string, std::string> entities;
  std::string suffix;
};
BidsName parse_bids_name(const std::string& file_name);
// The name without .nii.gz, .nii, .json or .tsv.
std::string strip_extension(std::string name);
bool is_nifti(const std::string& name);

// One run's scan file and where it belongs.
struct BidsScan {
  std::string path, subject, session, task, study;  // subject: "STUDY/sub-XX" (or STUDY/<file stem> without sub-)
  double tr = 0;                                     // from a sidecar; 0 = take the header's
  std::string tr_source;                             // the sidecar it came from
  // For a run with events, when the sidecar gives SliceTiming: the median slice time (seconds after the volume's
  // start), the time a volume stands for (fMRIPrep's slice-timing correction shifts every slice to it); else 0.
  double slice_reference = 0;
  std::string slice_source;
  std::string events;                                // the run's *_events.tsv by inheritance; "" when none
};

// The files with `suffix` and `extension` that apply to `scan` by BIDS inheritance: `dirs` from the deepest to the
// shallowest; in each, those whose entities are a subset of the scan's, the most specific first.
std::vector<std::filesystem::path> inherited_files(const BidsName& scan, const std::vector<std::filesystem::path>& dirs,
                                                   const std::string& suffix, const std::string& extension);
// The value of `key` in the first JSON sidecar (inherited_files order) that has it; `source` gets that file. A
// sidecar that is not JSON is an error naming it.
std::optional<nlohmann::json> sidecar_field(const BidsName& scan, const std::vector<std::filesystem::path>& dirs,
                                            const std::string& key, std::string& source);
// The median of SliceTiming (the middle slice's time; for an even count the mean of the two middle ones), 0 when no
// sidecar gives it. A SliceTiming that is not a list of times in [0, tr) is an error naming the sidecar.
double slice_reference(const BidsName& scan, const std::vector<std::filesystem::path>& dirs, double tr,
                       std::string& source);

// RepetitionTime by BIDS inheritance: `dirs` from the deepest to the shallowest; in each, the *.json files with the
// scan's suffix whose entities are a subset of the scan's, the most specific first. 0 when none gives it; a sidecar
// that is not JSON, or a RepetitionTime that is not a positive number, is an error naming the file.
double sidecar_tr(const BidsName& scan, const std::vector<std::filesystem::path>& dirs, std::string& source);
// A scan file with its entities; `dirs`: the folders its sidecars may be in, deepest first.
BidsScan make_scan(const std::filesystem::path& path, const BidsName& name, const std::string& study,
                   std::vector<std::filesystem::path> dirs);
// Every BOLD run of the dataset at root (sorted, so every rank finds the same list); an error naming root when there
// is none.
std::vector<BidsScan> find_bids_scans(const std::filesystem::path& root, const std::string& study);

// Parcel names from a label list beside the atlas, as atlases ship them (mricron's aal.nii.txt, FSL-style lists):
// one "index name ..." line per label, looked for as ATLAS.txt, ATLAS-without-.gz.txt and ATLAS-without-.nii.gz.txt.
// Labels without a line (or no list at all) are left out (the caller names them "label-<index>"); `source` gets
// the list's path.
std::map<int64_t, std::string> atlas_label_names(const std::string& atlas, std::string& source);

}  // namespace bfm::io
