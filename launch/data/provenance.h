// Provenance, carried and checked: what a corpus' data went through (the atlas file and its SHA-256, the parcels in
// order, detrending, scaling, confounds, scrubbing, TR handling), as bfm convert and bfm synth record it in every
// shard (docs/FORMAT.md), as bfm pretrain copies it into the released config.json ("data_provenance"), and as
// bfm embed, bfm eval and bfm finetune check it: data whose atlas or parcel order differs from the checkpoint's is
// refused (the model's parcel i would be another region), other steps that differ are warned about.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#ifdef BFM_WITH_HDF5
#include "io/corpus.h"
#endif

namespace bfm::launch {

#ifdef BFM_WITH_HDF5
// The corpus' provenance: {"atlas", "atlas_sha256", "parcel_labels", "preprocessing" (the text), the
// preprocessing_options' keys (detrend, scaling, target_tr, confounds, ...), "tr" (the TR every run shares, else
// null)}. Shards that disagree give {"atlas": "mixed", "mixed": true} (nothing to check them by).
nlohmann::json corpus_provenance(const io::Corpus& corpus);
// The same for a corpus folder (its manifest's shards).
nlohmann::json corpus_provenance(const std::string& dir);
#endif

// Checks data of provenance `data` (described as `data_where`, e.g. the corpus folder) against a checkpoint's
// (`checkpoint`, from `checkpoint_where`'s config.json). Throws bfm::Error naming both when the atlas (by SHA-256
// where both have one, else by name) or the parcel labels differ; returns one warning per other preprocessing step
// that differs. Either side empty or null (not recorded): nothing is checked.
std::vector<std::string> check_provenance(const nlohmann::json& checkpoint, const std::string& checkpoint_where,
                                          const nlohmann::json& data, const std::string& data_where);

// The same, with the checkpoint's provenance as ModelConfig::data_provenance holds it (JSON text, "" = none).
std::vector<std::string> check_provenance(const std::string& checkpoint_json, const std::string& checkpoint_where,
                                          const nlohmann::json& data, const std::string& data_where);

}  // namespace bfm::launch
