// A BIDS study's participants.tsv as subject traits (bfm convert): one row per participant, `participant_id` with or
// without the "sub-" prefix.
//  - age: the `age` column (any case), years; "n/a" or a value that is not a number (OpenNeuro's "89+") is missing.
//  - sex: the `sex` column (any case): M, m, male, Male... -> "M"; F, female... -> "F"; anything else is missing
//    (and listed in the notes).
//  - diagnosis: `--diagnosis COLUMN[=VALUE]`, by default the column `diagnosis` when there is one. With VALUE, a
//    participant whose cell is VALUE gets diagnosis VALUE and every other participant with a value gets "control",
//    so that bfm eval's diagnosis task (control = 0, anything else = 1) sees VALUE as the positive class; without it
//    the column's values are stored as they are (eval then counts every value other than "control" as positive).
//  - scores: every other column whose values are all numbers (or missing), named by its header, in file order.
// Errors are one line naming the file (and line): no participant_id column, an id listed twice, a --diagnosis
// column the file lacks.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "io/shard.h"

namespace bfm::io {

struct DiagnosisColumn {
  std::string column;    // "" = the default ("diagnosis" when the file has it)
  std::string positive;  // "" = store the values as they are
  bool given = false;    // the user named the column (then the file must have it)
};
// "COLUMN" or "COLUMN=VALUE"; throws bfm::Error for an empty column.
DiagnosisColumn parse_diagnosis_option(const std::string& text);

struct Participants {
  std::string path;
  std::vector<std::string> score_names;
  std::map<std::string, Subject> by_label;  // by "sub-XX"; Subject::id is that label (the caller adds the study)
  std::string diagnosis_column;             // the column used, or "" (none)
  std::vector<std::string> notes;           // what was left out and why (for the log)
};

Participants read_participants(const std::string& path, const DiagnosisColumn& diagnosis);

}  // namespace bfm::io
