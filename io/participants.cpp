// participants.tsv as subject traits (participants.h).
#include "io/participants.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>

#include "base/error.h"
#include "io/text_table.h"

namespace bfm::io {

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

int column_any_case(const TextTable& t, const std::string& name) {
  for (size_t i = 0; i < t.columns.size(); ++i)
    if (lower(t.columns[i]) == name) return static_cast<int>(i);
  return -1;
}

bool is_number(const std::string& cell) {
  char* end = nullptr;
  const double v = std::strtod(cell.c_str(), &end);
  return end != cell.c_str() && *end == '\0' && std::isfinite(v);
}

}  // namespace

DiagnosisColumn parse_diagnosis_option(const std::string& text) {
  DiagnosisColumn d;
  const auto eq = text.find('=');
  d.column = text.substr(0, eq);
  if (eq != std::string::npos) d.positive = text.substr(eq + 1);
  require(!d.column.empty(), "--diagnosis '", text,
          "': expected COLUMN or COLUMN=VALUE (the column of participants.tsv,"
          " and the value of the positive class)");
  require(eq == std::string::npos || !d.positive.empty(), "--diagnosis '", text, "': the value after '=' is empty");
  d.given = true;
  return d;
}

Participants read_participants(const std::string& path, const DiagnosisColumn& diagnosis) {
  const TextTable t = read_text_table(path);
  Participants out;
  out.path = path;
  const int id = t.column("participant_id");
  require(id >= 0, path, ":1: no 'participant_id' column");
  const int age = column_any_case(t, "age"), sex = column_any_case(t, "sex");
  int dx = -1;
  if (diagnosis.given) {
    dx = t.column(diagnosis.column);
    require(dx >= 0, path, ":1: no column '", diagnosis.column, "' (given by --diagnosis)");
  } else {
    dx = t.column("diagnosis");
  }
  if (dx >= 0) out.diagnosis_column = t.columns[size_t(dx)];

  // Score columns: the others whose every value is a number or missing (at least one number).
  std::vector<int> scores;
  for (int c = 0; c < static_cast<int>(t.columns.size()); ++c) {
    if (c == id || c == age || c == sex || c == dx) continue;
    bool numeric = true, any = false;
    for (const auto& row : t.rows) {
      const std::string& cell = row[size_t(c)];
      if (is_missing(cell)) continue;
      any = true;
      numeric = numeric && is_number(cell);
    }
    if (numeric && any) {
      scores.push_back(c);
      out.score_names.push_back(t.columns[size_t(c)]);
    } else {
      out.notes.push_back("column '" + t.columns[size_t(c)] + "' left out (" +
                          (any ? "not numeric" : "no values") + ")");
    }
  }

  std::map<std::string, int64_t> line_of;
  std::set<std::string> odd_sex, odd_age;
  bool control_seen = false;
  for (size_t r = 0; r < t.rows.size(); ++r) {
    const auto& row = t.rows[r];
    std::string label = row[size_t(id)];
    require(!is_missing(label), t.where(r), ": participant_id is missing");
    if (!label.starts_with("sub-")) label = "sub-" + label;
    const auto [seen, added] = line_of.emplace(label, t.lines[r]);
    require(added, t.where(r), ": participant ", label, " is listed twice (also on line ", seen->second, ")");
    Subject s;
    s.id = label;
    if (age >= 0 && !is_missing(row[size_t(age)])) {
      if (is_number(row[size_t(age)])) s.age = static_cast<float>(std::strtod(row[size_t(age)].c_str(), nullptr));
      else odd_age.insert(row[size_t(age)]);
    }
    if (sex >= 0 && !is_missing(row[size_t(sex)])) {
      const std::string v = lower(row[size_t(sex)]);
      if (v == "m" || v == "male") s.sex = "M";
      else if (v == "f" || v == "female") s.sex = "F";
      else odd_sex.insert(row[size_t(sex)]);
    }
    if (dx >= 0 && !is_missing(row[size_t(dx)])) {
      const std::string& v = row[size_t(dx)];
      s.diagnosis = diagnosis.positive.empty() ? v : v == diagnosis.positive ? v : "control";
      control_seen = control_seen || s.diagnosis == "control";
    }
    for (const int c : scores)
      s.scores.push_back(is_missing(row[size_t(c)]) ? NAN : static_cast<float>(t.number(r, c)));
    out.by_label.emplace(label, std::move(s));
  }
  const auto list = [](const std::set<std::string>& values) {
    std::string s;
    for (const auto& v : values) s += (s.empty() ? "'" : ", '") + v + "'";
    return s;
  };
  if (!odd_age.empty()) out.notes.push_back("age values " + list(odd_age) + " are not numbers: taken as missing");
  if (!odd_sex.empty()) out.notes.push_back("sex values " + list(odd_sex) + " are neither M nor F: taken as missing");
  if (dx >= 0 && diagnosis.positive.empty() && !control_seen)
    out.notes.push_back("diagnosis column '" + out.diagnosis_column + "' has no value 'control', so bfm eval counts "
                        "every participant with a value as positive; --diagnosis " + out.diagnosis_column +
                        "=VALUE names the positive class");
  return out;
}

}  // namespace bfm::io
