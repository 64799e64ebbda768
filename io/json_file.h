// Reading a JSON file (the small metadata files of every format: config.json, task.json, manifest.json, BIDS
// sidecars, ground_truth.json), with the errors bfm gives for bad input: one line naming the file.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace bfm::io {

// The whole file parsed. A file that cannot be opened: bfm::Error "PATH: " + missing (say what the file is and who
// writes it); one that is not JSON: "PATH: not valid JSON (the parser's reason)".
nlohmann::json read_json_file(const std::string& path, const std::string& missing = "missing or unreadable");

}  // namespace bfm::io
