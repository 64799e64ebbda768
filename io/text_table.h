// A text table with a header line, as BIDS and users write them: tab-separated (events.tsv, participants.tsv, a
// features .tsv) or comma-separated (a features .csv, with "..." quoting). Every row keeps its line number in the
// file, so that an error about a value names the file and the line a user opens in an editor ("FILE:LINE: ...").
// BIDS writes a missing value as "n/a"; an empty cell is read as missing too.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bfm::io {

struct TextTable {
  std::string path;
  std::vector<std::string> columns;            // the header's names
  std::vector<std::vector<std::string>> rows;  // each as many cells as columns
  std::vector<int64_t> lines;                  // [rows] line number of each row in the file (the header is line 1)

  // Index of the column named `name`, or -1.
  int column(const std::string& name) const;
  // "PATH:LINE" of row `row`, for messages.
  std::string where(size_t row) const;
  // The cell as a number; throws a one-line bfm::Error "PATH:LINE: column 'NAME' is 'VALUE', not a number" for
  // anything else (missing cells included: check is_missing first where they are allowed).
  double number(size_t row, int column) const;
};

// Reads `path`; the separator is a comma for a name ending in .csv, else a tab. Blank lines are skipped, a trailing
// \r (Windows line ends) and a leading UTF-8 byte order mark are dropped, cells are not otherwise trimmed. Throws
// bfm::Error naming the file (missing or empty) or the file and line (a row with another number of cells than the
// header, an unterminated quote).
TextTable read_text_table(const std::string& path);

// "n/a" (BIDS' missing value), "" or whitespace only.
bool is_missing(const std::string& cell);

}  // namespace bfm::io
