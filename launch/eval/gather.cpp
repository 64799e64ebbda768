// What the ranks found, brought together (gather.h).
#include "launch/eval/gather.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "launch/eval/tasks.h"

namespace bfm::launch::eval {

namespace {
namespace fs = std::filesystem;

// Records as doubles for the gather over ranks: task, method, metric and subject by index into tables every rank
// builds alike.
struct Codec {
  std::vector<std::string> tasks, methods, metrics, subjects;
  static int index(std::vector<std::string>& table, const std::string& v) {
    auto it = std::find(table.begin(), table.end(), v);
    if (it != table.end()) return int(it - table.begin());
    table.push_back(v);
    return int(table.size() - 1);
  }
};

}  // namespace

std::vector<ResultRow> gather_rows(const std::vector<ResultRow>& mine, const EvalData& data,
                                   const std::vector<std::string>& methods, runtime::Communicator& comm) {
  Codec codec;
  codec.tasks = task_names();
  codec.methods = methods;
  codec.metrics = row_metrics();
  Codec::index(codec.subjects, "all");
  for (const auto& s : data.subjects) Codec::index(codec.subjects, s.id);
  std::vector<double> mine_enc;
  for (const auto& r : mine) {
    mine_enc.insert(mine_enc.end(), {double(Codec::index(codec.tasks, r.task)), double(Codec::index(codec.methods, r.method)),
                                     r.fraction, double(Codec::index(codec.subjects, r.subject)), double(r.fold),
                                     double(Codec::index(codec.metrics, r.metric)), r.value});
  }
  require(codec.tasks.size() == tasks().size() && codec.methods.size() == methods.size() &&
              codec.metrics.size() == row_metrics().size(),
          "eval: unknown row name");
  const int ranks = comm.size();
  std::vector<double> counts(size_t(ranks), 0.0);
  counts[size_t(comm.rank())] = double(mine_enc.size());
  comm.allreduce_sum_host(counts.data(), ranks);
  int64_t total = 0, offset = 0;
  for (int r = 0; r < ranks; ++r) {
    if (r == comm.rank()) offset = total;
    total += int64_t(counts[size_t(r)]);
  }
  std::vector<double> all(size_t(total), 0.0);
  std::copy(mine_enc.begin(), mine_enc.end(), all.begin() + offset);
  if (ranks > 1) comm.allreduce_sum_host(all.data(), total);
  std::vector<ResultRow> rows;
  for (int64_t i = 0; i + 7 <= total; i += 7) {
    ResultRow r;
    r.task = codec.tasks[size_t(all[size_t(i)])];
    r.method = codec.methods[size_t(all[size_t(i + 1)])];
    r.fraction = all[size_t(i + 2)];
    r.subject = codec.subjects[size_t(all[size_t(i + 3)])];
    r.fold = int(all[size_t(i + 4)]);
    r.metric = codec.metrics[size_t(all[size_t(i + 5)])];
    r.value = all[size_t(i + 6)];
    rows.push_back(r);
  }
  return rows;
}

void gather_encoding_maps(RankResults& mine, runtime::Communicator& comm, EvalReport& report) {
  for (auto& [method, sums] : mine.encoding_sum) {
    double n = mine.encoding_count[method];
    if (comm.size() > 1) {
      comm.allreduce_sum_host(sums.data(), int64_t(sums.size()));
      comm.allreduce_sum_host(&n, 1);
    }
    if (n > 0) {
      for (auto& v : sums) v /= n;
      report.encoding_map[method] = sums;
      report.encoding_folds[method] = n;
    }
  }
}

void write_predictions(const RankResults& mine, const EvalScope& scope) {
  const std::string& dir = scope.options.predictions_dir;
  if (dir.empty()) return;
  runtime::Communicator& comm = scope.comm;
  fs::create_directories(dir);
  comm.barrier();
  for (const auto& [task, lines] : mine.predictions) {
    const fs::path part = fs::path(dir) / (task + ".rank" + std::to_string(comm.rank()) + ".csv");
    std::ofstream out(part);
    for (const auto& l : lines) out << l << "\n";
    require(static_cast<bool>(out), part.string(), ": cannot write");
  }
  comm.barrier();
  if (comm.rank() == 0) {
    const EvalData& data = scope.data;
    for (const std::string& task : prediction_files()) {
      bool any = false;
      std::ostringstream merged;
      merged << predictions_header(task, data.n_categories, data.stim_dim, data.n_parcels) << "\n";
      for (int r = 0; r < comm.size(); ++r) {
        const fs::path part = fs::path(dir) / (task + ".rank" + std::to_string(r) + ".csv");
        if (!fs::exists(part)) continue;
        any = true;
        std::ifstream in(part);
        merged << in.rdbuf();
        fs::remove(part);
      }
      if (any) {
        std::ofstream out(fs::path(dir) / (task + ".csv"));
        out << merged.str();
      }
    }
  }
  comm.barrier();
}

}  // namespace bfm::launch::eval
