#include "launch/data/provenance.h"

#include <set>
#include <sstream>

#include "base/error.h"
#ifdef BFM_WITH_HDF5
#include "io/corpus_manifest.h"
#endif

namespace bfm::launch {

namespace {

// The preprocessing steps compared between data and checkpoint (a difference is warned about, not refused).
const char* const kSteps[] = {"synthetic", "detrend", "scaling", "target_tr", "confounds", "scrub_fd"};

std::string short_digest(const std::string& sha) { return sha.size() > 12 ? sha.substr(0, 12) + "..." : sha; }

std::string atlas_text(const nlohmann::json& p) {
  std::string text = p.value("atlas", std::string("?"));
  const std::string sha = p.value("atlas_sha256", std::string());
  return sha.empty() ? text : text + " (sha256 " + short_digest(sha) + ")";
}

}  // namespace

#ifdef BFM_WITH_HDF5
nlohmann::json corpus_provenance(const io::Corpus& corpus) {
  nlohmann::json out;
  std::set<double> trs;
  for (int64_t s = 0; s < corpus.n_shards(); ++s) {
    const io::ShardHeader& h = corpus.shard(s).header();
    nlohmann::json p = {{"atlas", h.atlas}, {"atlas_sha256", h.atlas_sha256}, {"parcel_labels", h.parcel_labels},
                        {"preprocessing", h.preprocessing}};
    if (!h.preprocessing_options.empty()) {
      const nlohmann::json options = nlohmann::json::parse(h.preprocessing_options, nullptr, false);
      require(options.is_object(), corpus.shard(s).path(), ": attribute preprocessing_options is not a JSON object");
      for (const auto& [key, value] : options.items()) p[key] = value;
    }
    if (s == 0) out = std::move(p);
    else if (p != out) return {{"atlas", "mixed"}, {"mixed", true}};
    for (const io::Run& run : corpus.shard(s).runs()) trs.insert(run.tr);
  }
  if (!out.is_null()) out["tr"] = trs.size() == 1 ? nlohmann::json(*trs.begin()) : nlohmann::json(nullptr);
  return out;
}

nlohmann::json corpus_provenance(const std::string& dir) {
  return corpus_provenance(io::Corpus(dir, io::read_corpus_manifest(dir).shard_files));
}
#endif

std::vector<std::string> check_provenance(const nlohmann::json& checkpoint, const std::string& checkpoint_where,
                                          const nlohmann::json& data, const std::string& data_where) {
  std::vector<std::string> warnings;
  if (!checkpoint.is_object() || !data.is_object() || checkpoint.empty() || data.empty()) return warnings;
  if (checkpoint.value("mixed", false) || data.value("mixed", false)) return warnings;
  const std::string sha_c = checkpoint.value("atlas_sha256", std::string());
  const std::string sha_d = data.value("atlas_sha256", std::string());
  const bool same_atlas = !sha_c.empty() && !sha_d.empty()
                              ? sha_c == sha_d
                              : checkpoint.value("atlas", std::string()) == data.value("atlas", std::string());
  require(same_atlas, data_where, ": atlas ", atlas_text(data), " is not the checkpoint's atlas ",
          atlas_text(checkpoint), " (", checkpoint_where, "): the model's parcels would be other regions; convert the ",
          "data with the checkpoint's atlas");
  const auto labels_c = checkpoint.value("parcel_labels", std::vector<std::string>());
  const auto labels_d = data.value("parcel_labels", std::vector<std::string>());
  if (!labels_c.empty() && !labels_d.empty()) {
    require(labels_c.size() == labels_d.size(), data_where, ": ", labels_d.size(), " parcels, the checkpoint's corpus ",
            "had ", labels_c.size(), " (", checkpoint_where, ")");
    for (size_t i = 0; i < labels_c.size(); ++i)
      require(labels_c[i] == labels_d[i], data_where, ": parcel ", i, " is \"", labels_d[i], "\" here and \"",
              labels_c[i], "\" in the checkpoint's corpus (", checkpoint_where, "): another parcel order");
  }
  for (const char* step : kSteps) {
    const nlohmann::json c = checkpoint.value(step, nlohmann::json());
    const nlohmann::json d = data.value(step, nlohmann::json());
    if (c.is_null() || d.is_null() || c == d) continue;
    warnings.push_back(std::string(data_where) + ": " + step + " is " + d.dump() + ", the checkpoint's corpus had " +
                       c.dump() + " (" + checkpoint_where + ")");
  }
  return warnings;
}

std::vector<std::string> check_provenance(const std::string& checkpoint_json, const std::string& checkpoint_where,
                                          const nlohmann::json& data, const std::string& data_where) {
  if (checkpoint_json.empty()) return {};
  return check_provenance(nlohmann::json::parse(checkpoint_json, nullptr, false), checkpoint_where, data, data_where);
}

}  // namespace bfm::launch
