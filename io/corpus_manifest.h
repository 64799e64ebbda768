// A corpus is a folder of shards plus manifest.json (docs/FORMAT.md): counts per shard and in all, and the
// subject-level train/validation/test split. The split of a subject depends only on (seed, subject id), so a subject
// whose runs lie in several shards or studies is in one split only, and the split does not change when shards are
// added. The writer (write_manifest) and the reader (read_corpus_manifest) are both here; the writer spells the
// small, flat JSON out by hand, the reader parses it with nlohmann/json.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bfm::io {

enum class Split { train, validation, test };

struct SplitFractions {
  double train = 0.8;
  double validation = 0.1;  // test takes the rest
};

// The documented rule: u = splitmix64_mix(fnv1a64(id) ^ splitmix64_mix(seed)) / 2^64; train if u < train,
// validation if u < train + validation, else test.
Split subject_split(const std::string& subject_id, uint64_t seed, const SplitFractions& fractions);
const char* split_name(Split split);

struct ShardSummary {
  std::string file;  // name inside the corpus folder
  int64_t runs = 0, timepoints = 0;
  double hours = 0.0;  // sum over runs of length * TR
  std::vector<std::string> subjects;  // ids of its subject table
};

// What the corpus's time points are annotated with (a converted study with events): the label names (label value c
// is label_names[c], the same in every shard) and the stimulus table's size. Optional in manifest.json ("labels",
// "stimuli"); absent when empty.
struct CorpusAnnotations {
  std::vector<std::string> label_names;
  int64_t stimuli = 0, stimulus_dim = 0;
};

// Writes dir/manifest.json (through manifest.json.tmp and a rename). Throws bfm::Error naming the file.
void write_manifest(const std::string& dir, const std::vector<ShardSummary>& shards, uint64_t split_seed,
                    const SplitFractions& fractions, const CorpusAnnotations& annotations = {});

// One part of a corpus's shards, for writing a corpus in independent jobs (a Slurm job array, `--part I/N` of
// `bfm synth` and `bfm convert`): part `index` of `count` owns shard j when j % count == index. Within a part the
// MPI ranks share its shards the same way: the k-th shard of the part (j = index + k * count) goes to rank
// k % ranks, so with one part shard j goes to rank j % ranks, as without parts.
struct ShardPart {
  int64_t index = 0, count = 1;
  bool whole() const { return count == 1; }
  bool owns(int64_t shard) const { return shard % count == index; }
  std::string text() const { return std::to_string(index) + "/" + std::to_string(count); }
};

// Reads "I/N" (0 <= I < N, N >= 1; decimal digits only). Throws bfm::Error with one line naming the value.
ShardPart parse_shard_part(const std::string& text);

// The shards among [0, n_shards) that `rank` of `ranks` writes for `part`, ascending.
std::vector<int64_t> shards_for(int64_t n_shards, const ShardPart& part, int rank, int ranks);

// "shard-00003.h5, shard-00007.h5 (2 of 8 shards)": the names of the shards in `missing`, at most `limit` of them
// and then "and N more", for an error that names what is missing.
std::string shard_list(const std::vector<int64_t>& missing, int64_t n_shards, size_t limit = 10);

// ---- reading
struct CorpusManifest {
  std::string path;                      // dir/manifest.json
  std::vector<std::string> shard_files;  // names inside the folder, in order
  int64_t n_subjects = 0, n_runs = 0, n_timepoints = 0;
  double hours = 0;
  uint64_t split_seed = 0;
  double train_fraction = 0, validation_fraction = 0;
  std::vector<std::string> train, validation, test;  // subject ids
  CorpusAnnotations annotations;                     // empty for a corpus without them
};

// Throws bfm::Error naming the file: missing, not JSON, not a bfm corpus, another format_version, fields missing.
CorpusManifest read_corpus_manifest(const std::string& dir);

}  // namespace bfm::io

#ifdef BFM_WITH_HDF5
#include "io/shard_reader.h"
namespace bfm::io {
ShardSummary summarize(const ShardReader& shard);
}
#endif
