// Reads and checks a corpus folder's manifest.json (written by io/corpus_manifest.h; layout in docs/FORMAT.md).
// Parsed here, not in io/, because JSON parsing is a launch/ dependency (nlohmann/json).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bfm::launch {

struct CorpusManifest {
  std::string path;                      // dir/manifest.json
  std::vector<std::string> shard_files;  // names inside the folder, in order
  int64_t n_subjects = 0, n_runs = 0, n_timepoints = 0;
  double hours = 0;
  uint64_t split_seed = 0;
  double train_fraction = 0, validation_fraction = 0;
  std::vector<std::string> train, validation, test;  // subject ids
};

// Throws bfm::Error naming the file: missing, not JSON, not a bfm corpus, another format_version, fields missing.
CorpusManifest read_corpus_manifest(const std::string& dir);

}  // namespace bfm::launch
