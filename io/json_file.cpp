#include "io/json_file.h"

#include <fstream>

#include "base/error.h"

namespace bfm::io {

nlohmann::json read_json_file(const std::string& path, const std::string& missing) {
  std::ifstream in(path);
  require(static_cast<bool>(in), path, ": ", missing);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
}

}  // namespace bfm::io
