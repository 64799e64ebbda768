// A corpus is a folder of shards plus manifest.json (docs/FORMAT.md): counts per shard and in all, and the
// subject-level train/validation/test split. The split of a subject depends only on (seed, subject id), so a subject
// whose runs lie in several shards or studies is in one split only, and the split does not change when shards are
// added. JSON is written by hand here (io/ depends on HDF5 and MPI only); it is small and flat.
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

// Writes dir/manifest.json (through manifest.json.tmp and a rename). Throws bfm::Error naming the file.
void write_manifest(const std::string& dir, const std::vector<ShardSummary>& shards, uint64_t split_seed,
                    const SplitFractions& fractions);

}  // namespace bfm::io

#ifdef BFM_WITH_HDF5
#include "io/shard_reader.h"
namespace bfm::io {
ShardSummary summarize(const ShardReader& shard);
}
#endif
