// What one shard file holds, in memory: its header (atlas, parcels, storage), its runs' metadata and its subject
// table. The layout on disk is docs/FORMAT.md; io/shard_writer.h writes it and io/shard_reader.h reads it.
// Plain data, no HDF5: launch/ and the sampler may use these types in any build.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace bfm::io {

inline constexpr const char* kShardFormat = "bfm-shard";
inline constexpr int kShardFormatVersion = 1;
// Time points per chunk of the row datasets (all columns in a chunk), by default: a window of up to this length
// touches at most two chunks, and a chunk of 400 float32 parcels is 400 KB. ShardHeader::chunk_rows overrides it
// (docs/FORMAT.md: smaller chunks read fewer bytes per random window, larger ones make fewer, bigger reads).
inline constexpr int64_t kShardChunkRows = 256;

enum class Storage { float32, float16 };

struct ShardHeader {
  int64_t n_parcels = 0;
  std::string atlas;                       // e.g. "Schaefer400" or the atlas file's name
  std::vector<std::string> parcel_labels;  // n_parcels names, or empty (then "parcel-<i>" is written)
  std::vector<float> parcel_coords;        // [n_parcels, 3] millimetres (MNI), or empty
  Storage storage = Storage::float32;
  int64_t stimulus_dim = 0;                // S > 0: /runs/stim_embedding [N, S] exists
  bool labels = false;                     // /runs/label [N] exists
  std::vector<std::string> score_names;    // k names of /subjects/scores columns (k may be 0)
  // Optional (bfm convert of a study with events): label value c's name is label_names[c] (/runs/label_names);
  // the study's stimuli, /stimuli/id [M] and /stimuli/features [M, stimulus_dim] (features may be empty: ids only),
  // with /runs/stimulus [N] (int32, index into stimulus_ids, -1 = none) when stimulus_ids is not empty. The reader
  // fills label_names and stimulus_ids; the features table is read on demand (ShardReader::read_stimulus_table).
  std::vector<std::string> label_names;
  std::vector<std::string> stimulus_ids;
  std::vector<float> stimulus_features;
  std::string converter;                   // provenance: program and version that wrote the shard
  std::string preprocessing;               // provenance: what was done to the signal (free text)
  // Provenance a program checks (launch/data/provenance.h): the atlas file's SHA-256 ("" = not known, e.g. synthetic)
  // and the preprocessing as JSON ({"detrend": true, "scaling": "zscore", "target_tr": 0, "confounds": "none", ...};
  // "" = not recorded, shards written before it existed).
  std::string atlas_sha256;
  std::string preprocessing_options;
  int64_t chunk_rows = kShardChunkRows;    // time points per chunk (writer); the file's (reader)
};

// One run's metadata (one row of the /runs tables).
struct Run {
  std::string subject;  // subject id, unique across the corpus (e.g. "studyA/sub-01")
  std::string session, study, task, site;
  std::string source;   // provenance: the scan file it came from ("" for synthetic data)
  double tr = 0.0;      // seconds
  int64_t length = 0;   // time points
  int64_t offset = 0;   // first row in /runs/timeseries (set by the writer, read by the reader)
};

// One row of the subject table; NaN and "" mean "not known for this study".
struct Subject {
  std::string id;
  float age = NAN;
  std::string sex;        // "F", "M", or ""
  std::string diagnosis;  // e.g. "control", "MDD", or ""
  std::vector<float> scores;  // one per ShardHeader::score_names (NaN where missing); empty = all missing
};

// A run to be written: metadata plus pointers to its rows (row-major, `length` rows).
struct RunView {
  Run meta;
  const float* timeseries = nullptr;      // [length, n_parcels]
  const float* stim_embedding = nullptr;  // [length, stimulus_dim], or null: zeros are stored
  const int32_t* labels = nullptr;        // [length], or null: -1 (no label) is stored
  const int32_t* stimulus = nullptr;      // [length] index into ShardHeader::stimulus_ids, or null: -1 is stored
};

// "shard-00042.h5": the name of the i-th shard of a corpus folder.
inline std::string shard_file_name(int64_t index) {
  char name[32];
  std::snprintf(name, sizeof name, "shard-%05lld.h5", static_cast<long long>(index));
  return name;
}

}  // namespace bfm::io
