#include "io/corpus_manifest_reader.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/error.h"

namespace bfm::launch {

CorpusManifest read_corpus_manifest(const std::string& dir) {
  CorpusManifest m;
  m.path = (std::filesystem::path(dir) / "manifest.json").string();
  std::ifstream in(m.path);
  require(in.good(), m.path, ": no such file (not a bfm corpus folder, or its conversion did not finish)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(m.path, ": not valid JSON: ", e.what());
  }
  try {
    require(j.value("format", std::string()) == "bfm-corpus", m.path, ": not a bfm corpus manifest (format is ",
            j.contains("format") ? j["format"].dump() : "missing", ")");
    const int version = j.at("format_version").get<int>();
    require(version == 1, m.path, ": corpus format_version ", version, "; this bfm reads format_version 1");
    for (const auto& s : j.at("shards")) m.shard_files.push_back(s.at("file").get<std::string>());
    m.n_subjects = j.at("n_subjects").get<int64_t>();
    m.n_runs = j.at("n_runs").get<int64_t>();
    m.n_timepoints = j.at("n_timepoints").get<int64_t>();
    m.hours = j.at("hours").get<double>();
    const auto& split = j.at("split");
    m.split_seed = split.at("seed").get<uint64_t>();
    m.train_fraction = split.at("train_fraction").get<double>();
    m.validation_fraction = split.at("validation_fraction").get<double>();
    m.train = split.at("train").get<std::vector<std::string>>();
    m.validation = split.at("validation").get<std::vector<std::string>>();
    m.test = split.at("test").get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    fail(m.path, ": malformed manifest: ", e.what());
  }
  return m;
}

}  // namespace bfm::launch
