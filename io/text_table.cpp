// TSV / CSV tables with line numbers (text_table.h).
#include "io/text_table.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>

#include "base/error.h"

namespace bfm::io {

namespace {

// One line split at `sep`; with quoting (CSV) a cell may be "..." with "" for a quote inside. `ok` is false for an
// unterminated quote.
std::vector<std::string> split_line(const std::string& line, char sep, bool quoting, bool& ok) {
  std::vector<std::string> cells(1);
  bool quoted = false;
  ok = true;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoting && quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') cells.back() += '"', ++i;
      else if (c == '"') quoted = false;
      else cells.back() += c;
    } else if (quoting && c == '"' && cells.back().empty()) {
      quoted = true;
    } else if (c == sep) {
      cells.emplace_back();
    } else {
      cells.back() += c;
    }
  }
  ok = !quoted;
  return cells;
}

}  // namespace

int TextTable::column(const std::string& name) const {
  for (size_t i = 0; i < columns.size(); ++i)
    if (columns[i] == name) return static_cast<int>(i);
  return -1;
}

std::string TextTable::where(size_t row) const { return path + ":" + std::to_string(lines.at(row)); }

double TextTable::number(size_t row, int col) const {
  const std::string& cell = rows.at(row).at(static_cast<size_t>(col));
  const char* begin = cell.c_str();
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(begin, &end);
  while (end && (*end == ' ')) ++end;
  const bool whole = end != begin && end && *end == '\0' && *begin != ' ';
  if (!whole || errno == ERANGE || !std::isfinite(v))
    fail(where(row), ": column '", columns.at(static_cast<size_t>(col)), "' is '", cell, "', not a number");
  return v;
}

bool is_missing(const std::string& cell) {
  return cell == "n/a" || cell.find_first_not_of(" \t") == std::string::npos;
}

TextTable read_text_table(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  require(in.good(), path, ": cannot open");
  const bool csv = path.size() >= 4 && path.compare(path.size() - 4, 4, ".csv") == 0;
  const char sep = csv ? ',' : '\t';
  TextTable t;
  t.path = path;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (number == 1 && line.starts_with("\xEF\xBB\xBF")) line.erase(0, 3);
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    bool ok = true;
    std::vector<std::string> cells = split_line(line, sep, csv, ok);
    require(ok, path, ":", number, ": a quoted cell is not closed");
    if (t.columns.empty()) {
      t.columns = std::move(cells);
      continue;
    }
    require(cells.size() == t.columns.size(), path, ":", number, ": ", cells.size(), " ",
            csv ? "comma" : "tab", "-separated cells, the header has ", t.columns.size());
    t.rows.push_back(std::move(cells));
    t.lines.push_back(number);
  }
  require(!t.columns.empty(), path, ": empty file, expected a header line");
  return t;
}

}  // namespace bfm::io
