// manifest.json of a corpus folder, and the subject-level split rule.
#include "io/corpus_manifest.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "io/shard.h"
#include "base/error.h"
#include "io/json_file.h"
#include "base/hash.h"

namespace bfm::io {

namespace {


std::string json_string(const std::string& s) {
  std::ostringstream os;
  os << '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') os << '\\' << c;
    else if (c < 0x20) os << "\\u" << std::hex << std::setw(4) << std::setfill('0') << int(c) << std::dec;
    else os << c;
  }
  os << '"';
  return os.str();
}

std::string json_list(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + json_string(v[i]);
  return out + "]";
}

}  // namespace

Split subject_split(const std::string& subject_id, uint64_t seed, const SplitFractions& f) {
  require(f.train >= 0 && f.validation >= 0 && f.train + f.validation <= 1.0, "split fractions train ", f.train,
          " and validation ", f.validation, " must be >= 0 and sum to at most 1");
  const double u = unit_interval(mix64(fnv1a64(subject_id) ^ mix64(seed)));
  if (u < f.train) return Split::train;
  if (u < f.train + f.validation) return Split::validation;
  return Split::test;
}

const char* split_name(Split split) {
  switch (split) {
    case Split::train: return "train";
    case Split::validation: return "validation";
    default: return "test";
  }
}

void write_manifest(const std::string& dir, const std::vector<ShardSummary>& shards, uint64_t split_seed,
                    const SplitFractions& fractions, const CorpusAnnotations& annotations) {
  std::set<std::string> subjects;
  int64_t runs = 0, timepoints = 0;
  double hours = 0;
  std::ostringstream list;
  for (size_t i = 0; i < shards.size(); ++i) {
    const auto& s = shards[i];
    subjects.insert(s.subjects.begin(), s.subjects.end());
    runs += s.runs;
    timepoints += s.timepoints;
    hours += s.hours;
    list << (i ? ",\n" : "") << "    {\"file\": " << json_string(s.file) << ", \"runs\": " << s.runs
         << ", \"subjects\": " << s.subjects.size() << ", \"timepoints\": " << s.timepoints
         << ", \"hours\": " << std::setprecision(17) << s.hours << "}";
  }
  std::vector<std::string> split[3];
  for (const auto& id : subjects) split[static_cast<int>(subject_split(id, split_seed, fractions))].push_back(id);

  std::ostringstream os;
  os << std::setprecision(17) << "{\n  \"format\": \"bfm-corpus\",\n  \"format_version\": 1,\n"
     << "  \"shard_format_version\": 1,\n"
     << "  \"n_shards\": " << shards.size() << ",\n  \"n_subjects\": " << subjects.size() << ",\n  \"n_runs\": " << runs
     << ",\n  \"n_timepoints\": " << timepoints << ",\n  \"hours\": " << hours << ",\n";
  if (!annotations.label_names.empty()) os << "  \"labels\": " << json_list(annotations.label_names) << ",\n";
  if (annotations.stimuli > 0)
    os << "  \"stimuli\": {\"count\": " << annotations.stimuli << ", \"dim\": " << annotations.stimulus_dim << "},\n";
  os << "  \"shards\": [\n"
     << list.str() << "\n  ],\n  \"split\": {\n    \"seed\": " << split_seed << ",\n    \"train_fraction\": "
     << fractions.train << ",\n    \"validation_fraction\": " << fractions.validation
     << ",\n    \"train\": " << json_list(split[0]) << ",\n    \"validation\": " << json_list(split[1])
     << ",\n    \"test\": " << json_list(split[2]) << "\n  }\n}\n";

  const std::string path = (std::filesystem::path(dir) / "manifest.json").string(), tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << os.str();
    out.close();
    require(out.good(), path, ": cannot write ", tmp);
  }
  require(std::rename(tmp.c_str(), path.c_str()) == 0, path, ": cannot rename ", tmp, " to it");
}

ShardPart parse_shard_part(const std::string& text) {
  const auto bad = [&](const char* why) {
    fail("--part ", text.empty() ? "''" : text, ": ", why, " (expected I/N, part I of N counted from 0: 0/4 ... 3/4)");
  };
  const auto slash = text.find('/');
  if (slash == std::string::npos) bad("no '/'");
  const auto number = [&](const std::string& digits, bool is_index) -> int64_t {
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos)
      bad(is_index ? "I is not a whole number" : "N is not a whole number");
    if (digits.size() > 9) bad(is_index ? "I is too large" : "N is too large");
    return std::stoll(digits);
  };
  ShardPart p;
  p.index = number(text.substr(0, slash), true);
  p.count = number(text.substr(slash + 1), false);
  if (p.count < 1) bad("N must be at least 1");
  if (p.index >= p.count) bad("I must be less than N");
  return p;
}

std::vector<int64_t> shards_for(int64_t n_shards, const ShardPart& part, int rank, int ranks) {
  require(part.count >= 1 && part.index >= 0 && part.index < part.count && ranks >= 1 && rank >= 0 && rank < ranks,
          "shards_for: part ", part.text(), " rank ", rank, " of ", ranks);
  std::vector<int64_t> out;
  for (int64_t j = part.index + rank * part.count; j < n_shards; j += part.count * ranks) out.push_back(j);
  return out;
}

std::string shard_list(const std::vector<int64_t>& missing, int64_t n_shards, size_t limit) {
  std::string s;
  for (size_t i = 0; i < missing.size() && i < limit; ++i) s += (i ? ", " : "") + shard_file_name(missing[i]);
  if (missing.size() > limit) s += " and " + std::to_string(missing.size() - limit) + " more";
  return s + " (" + std::to_string(missing.size()) + " of " + std::to_string(n_shards) + " shards)";
}

#ifdef BFM_WITH_HDF5
ShardSummary summarize(const ShardReader& shard) {
  ShardSummary s;
  s.file = std::filesystem::path(shard.path()).filename().string();
  s.runs = static_cast<int64_t>(shard.runs().size());
  s.timepoints = shard.n_timepoints();
  for (const auto& r : shard.runs()) s.hours += static_cast<double>(r.length) * r.tr / 3600.0;
  for (const auto& subject : shard.subjects()) s.subjects.push_back(subject.id);
  return s;
}
#endif

CorpusManifest read_corpus_manifest(const std::string& dir) {
  CorpusManifest m;
  m.path = (std::filesystem::path(dir) / "manifest.json").string();
  const nlohmann::json j =
      read_json_file(m.path, "no such file (not a bfm corpus folder, or its conversion did not finish)");
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
    if (j.contains("labels")) m.annotations.label_names = j["labels"].get<std::vector<std::string>>();
    if (j.contains("stimuli")) {
      m.annotations.stimuli = j["stimuli"].at("count").get<int64_t>();
      m.annotations.stimulus_dim = j["stimuli"].at("dim").get<int64_t>();
    }
  } catch (const nlohmann::json::exception& e) {
    fail(m.path, ": malformed manifest: ", e.what());
  }
  return m;
}

}  // namespace bfm::io
