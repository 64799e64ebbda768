// The folder bfm eval writes: results.csv (every subject x fold x fraction x method x metric), summary.csv and
// summary.md (mean and spread per task, method, fraction and metric, with chance), fewshot_<task>.png (the main
// metric against the fraction of the new subject's data, one line per method, chance dashed), encoding_map.png (the
// per-parcel correlation of the encoding models), config.json (what was evaluated: corpus, checkpoints, options).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "launch/eval/evaluate.h"

namespace bfm::launch::eval {

// Writes the report into dir (created); rank 0 only. Returns the Markdown table that summary.md holds at the
// fractions `headline` (e.g. 0.1 and 1.0), for printing.
std::string write_report(const std::string& dir, const EvalReport& report, const EvalOptions& options,
                         const nlohmann::json& provenance, const std::vector<double>& headline);

// Reads a report folder written by write_report (results.csv and config.json): the rows, the counts, the notes and
// the encoding map; provenance gets its config.json. Throws bfm::Error naming the file.
EvalReport read_report(const std::string& dir, nlohmann::json* provenance);
// Joins the reports of a job array's parts (bfm eval --part I/N): rows concatenated, held-out subjects summed, the
// encoding maps averaged by their fold counts, notes joined, the summary recomputed; the parts' predictions CSVs are
// concatenated into out_dir/predictions. Refuses parts of different corpora, checkpoints or options, or a part twice.
EvalReport merge_reports(const std::vector<std::string>& dirs, const std::string& out_dir, nlohmann::json* provenance);

// The short table the main job prints: per task, the main metric at `fraction` for the methods, with chance.
std::string headline_table(const EvalReport& report, double fraction);

}  // namespace bfm::launch::eval

